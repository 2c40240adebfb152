"""The Redis connection every part of the Redis cluster shares: connecting with backoff,
watching its health, reconnecting after an outage (and having every part re-register
what this node holds), and :meth:`RedisLink.guarded`, the one way a part falls back to
this node's own view when Redis is not there."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast, overload

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from clarion import metrics
from clarion.cluster.redis import topology
from clarion.cluster.redis.keys import RedisKeys
from clarion.config import redact_url

log = logging.getLogger("clarion.redis")

NODE_ID_LENGTH = 16
Listener = Callable[[], Awaitable[None]]
_T = TypeVar("_T")


# Options of the link's pool, wherever its connections go. A blocking pool: a burst of
# subscribes (each a script call) waits for a free connection instead of failing, which
# would read as Redis being down.
POOL_OPTIONS: dict[str, Any] = {
    "max_connections": 64,
    "timeout": 10,
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 10,
}


class Endpoint(Protocol):
    """Where the link's connections go: one Redis at a URL (:class:`Direct`), or the
    master a set of sentinels names (:mod:`.sentinel`), which can move."""

    def pool(self, options: dict[str, Any]) -> aioredis.BlockingConnectionPool:
        """The link's connection pool (pub/sub connections come from it too)."""
        ...

    def describe(self) -> str:
        """Where, for log lines (no password in it)."""
        ...

    async def moved(self) -> str | None:
        """Checked with each health ping: why the connections go to a Redis that is no
        longer the one to use (the master moved), or None."""
        ...

    def current(self, connection: Any) -> bool:
        """Whether ``connection`` (a held one: the pub/sub's) goes to the Redis to use."""
        ...

    def follow(self) -> None:
        """The link reconnects after an outage: new connections may go to a Redis other
        than before (the new master). Until then, they never do."""
        ...

    async def close(self) -> None: ...


class Direct:
    """One Redis at ``url``: it never moves."""

    def __init__(self, url: str) -> None:
        self.url = url

    def pool(self, options: dict[str, Any]) -> aioredis.BlockingConnectionPool:
        return aioredis.BlockingConnectionPool.from_url(self.url, **options)

    def describe(self) -> str:
        return redact_url(self.url)

    async def moved(self) -> str | None:
        return None

    def current(self, connection: Any) -> bool:
        return True

    def follow(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLink:
    """The Redis connection every subsystem shares, its health, and reconnection."""

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout: float = 1.0,
        endpoint: Endpoint | None = None,
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.endpoint: Endpoint = Direct(url) if endpoint is None else endpoint
        self.prefix = prefix
        # Seconds Redis has to answer a publish or the health ping before the link is
        # marked down: a frozen Redis keeps the connections open and never answers.
        self.timeout = timeout
        self.node_id = secrets.token_hex(NODE_ID_LENGTH // 2)
        self.keys = RedisKeys(prefix, self.node_id, sharded=cluster)
        self.cluster = cluster
        # How many times the link was marked down: a publish whose send spans one is not
        # answered 200 on Redis Cluster (see .sharded).
        self.failures = 0
        if cluster:  # Redis Cluster: its own client (topology.py), same command surface
            self.client: aioredis.Redis = cast(
                aioredis.Redis, topology.cluster_client(url, f"clarion-{self.node_id}")
            )
            topology.watch_topology(
                cast(RedisCluster, self.client), lambda why: self.failed(ConnectionError(why))
            )
        else:
            # CLIENT LIST shows which node each connection belongs to.
            pool = self.endpoint.pool({**POOL_OPTIONS, "client_name": f"clarion-{self.node_id}"})
            self.client = aioredis.Redis(connection_pool=pool)
        self.up = False
        self.up_since = 0.0  # time.monotonic() when the link last came up
        # The other nodes last seen in the cluster, and those of them not yet registered
        # again since the link came back (until then a publish may miss them, and the
        # cluster state may lack their sockets); waited for at most ``peer_wait`` seconds.
        self.peers: set[str] = set()
        self.waiting_for: set[str] = set()
        self.peer_wait = 10.0
        self._on_up: list[Listener] = []
        self._watcher: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._up_gauge, self._rtt = metrics.redis_metrics()

    async def _drop_idle(self) -> None:
        """Drop every idle pooled connection (they may predate an outage); on Redis
        Cluster, read its topology again too (a failover moved slots)."""
        if self.cluster:
            await topology.refresh(cast(RedisCluster, self.client))
        else:
            await self.client.connection_pool.disconnect(inuse_connections=False)
            self.endpoint.follow()  # Sentinel: the master agreed on may have moved

    @property
    def whole(self) -> bool:
        """Every node seen before the last outage is back (or has had its time)."""
        return not self.waiting_for or time.monotonic() - self.up_since >= self.peer_wait

    def on_reconnect(self, listener: Listener, first: bool = False) -> None:
        """``listener`` re-registers this node's state after Redis came back. A ``first``
        one runs before the others, at once when the link is marked up (until its first
        real wait, nothing else runs)."""
        if first:
            self._on_up.insert(0, listener)
        else:
            self._on_up.append(listener)

    async def connect(self) -> None:
        """Wait for Redis with backoff (boot never crashes on a missing Redis)."""
        delay = 0.1
        while True:
            try:
                await self.client.ping()
            except (RedisError, OSError) as exc:
                log.warning(
                    "Redis at %s not reachable (%s); retrying in %.1f s",
                    self.endpoint.describe(),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2) * random.uniform(0.8, 1.2)
                continue
            break
        self.up, self.up_since = True, time.monotonic()
        self._up_gauge.set(1)
        log.info("connected to Redis at %s as node %s", self.endpoint.describe(), self.node_id)
        self._watcher = asyncio.create_task(self._watch())

    def failed(self, exc: BaseException) -> None:
        """A subsystem saw Redis fail: mark the link down and start reconnecting."""
        if self._closed:
            return  # connections closing on the way out are not an outage
        if self.up:
            log.error("Redis connection lost (%s): serving local subscribers only", exc)
        self.up = False
        self.failures += 1
        self._up_gauge.set(0)
        self._lost.set()

    @overload
    async def guarded(self, call: Callable[[], Awaitable[_T]]) -> _T | None: ...

    @overload
    async def guarded(
        self, call: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]
    ) -> _T: ...

    async def guarded(
        self,
        call: Callable[[], Awaitable[_T]],
        fallback: Callable[[], Awaitable[_T]] | None = None,
    ) -> _T | None:
        """``call()`` on Redis; when the link is down or Redis fails (the link is then
        marked down), ``fallback()`` instead: this node's own view, or None without one.

        ``call`` is not even started while the link is known to be down.
        """
        if self.up:
            try:
                return await call()
            except (RedisError, OSError) as exc:
                self.failed(exc)
        return None if fallback is None else await fallback()

    async def _watch(self) -> None:
        while not self._closed:
            # Check every second, or at once when a subsystem reports a failure. (Plain
            # sleeps: Python 3.11's wait_for can swallow the cancellation at shutdown.)
            for _ in range(10):
                if self._lost.is_set() or self._closed:
                    break
                await asyncio.sleep(0.1)
            if self._closed:
                return
            if self.up:
                self._lost.clear()
                started = time.perf_counter()
                try:
                    await self._ping()
                except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                    self.failed(exc)
                    continue
                self._rtt.observe(time.perf_counter() - started)
                # A master that moved while the old one still answers (a failover that
                # demoted it) is an outage of the old one: the new one may lack its last
                # writes, so everything is registered again there.
                moved = await self.endpoint.moved()
                if moved is not None:
                    self.failed(ConnectionError(moved))
                continue
            self._lost.clear()
            delay = 0.2
            while True:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                try:
                    # Every idle pooled connection may predate the outage (a restarted
                    # Redis closed them all): drop them, or each would fail once, later,
                    # on a publish or a subscribe, and look like a new outage. Those in
                    # use stay: the subscription may have outlived the outage (a frozen
                    # Redis), and a broken one in use fails on its own.
                    await self._drop_idle()
                    await self._ping()
                    # Up before the listeners run: they write through the link (the
                    # first of them holds back what must not reach Redis ahead of it).
                    self.up, self.up_since = True, time.monotonic()
                    self.waiting_for = set(self.peers)
                    for listener in self._on_up:
                        await listener()
                except Exception as exc:  # whatever it is, the watcher must not die
                    self.up = False
                    if isinstance(exc, RedisError | OSError):
                        log.warning("Redis still unavailable (%s)", exc)
                    else:
                        log.exception("registering again after the outage failed; retrying")
                    # Capped at a quarter of peer_wait too: the other nodes wait that
                    # long for this one (then publish as if it were dead), so it must
                    # try again several times within it once Redis is back (a failover).
                    delay = min(5.0, self.peer_wait / 4, delay * 2)
                    continue
                break
            self._lost.clear()  # failures reported while reconnecting are dealt with
            self.up = True
            self._up_gauge.set(1)
            log.info("Redis is back: this node's state is registered again")

    async def _ping(self) -> None:
        """PING within the timeout (an absolute one: a frozen Redis never answers)."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.cluster:  # every master (a dead replica is no outage)
                    await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await self.client.ping()
        except TimeoutError as exc:  # say what happened: its own text is empty
            raise TimeoutError(f"no answer from Redis within {self.timeout:g} s") from exc

    def closing(self) -> None:
        """Shutdown has begun: errors from here on are the connections going away."""
        self._closed = True

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            await stop_tasks([self._watcher])
        await self.client.aclose()
        await self.endpoint.close()


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout: float = 2.0) -> None:
    """Cancel tasks and wait for them a bounded time, whatever they do with the
    cancellation (a task that swallows it must not hang the shutdown)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception never retrieved" noise


def texts(values: list[Any]) -> list[str]:
    """Decode many names of a Redis reply at once (names never contain NUL)."""
    if not values:
        return []
    if isinstance(values[0], str):
        return list(values)
    return b"\0".join(values).decode().split("\0")


def text(value: bytes | str) -> str:
    """One name of a Redis reply, as text."""
    return value.decode() if isinstance(value, bytes) else value
