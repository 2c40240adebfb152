"""The cluster on Redis: fan-out between nodes, cluster-wide state, node leases.

One :class:`RedisLink` (one Redis configuration) serves every subsystem. It connects at
start with backoff, watches the connection, and when Redis comes back after an outage
has every subsystem re-register what this node holds.

* :class:`RedisBroker` publishes each frame to the Redis channel of its Pusher channel
  and subscribes this node only to the Redis channels it has local subscribers for.
  This node's own subscribers are written to at once; other nodes get the frame through
  Redis, in publish order.
* :class:`RedisState` keeps counts in Redis hashes, changed by Lua scripts so that the
  node whose change crosses 0 <-> 1 is the only one to report it (occupied, vacated,
  member added or removed, user online or offline): each webhook is fired once for the
  cluster. Every node records its own contribution in a per-node hash and renews a lease;
  when a node dies without saying goodbye, the first survivor to notice removes that
  node's contribution in one script and sends what it implies (member_removed frames and
  webhooks, channel_vacated) exactly once. A local shadow (the memory state) answers
  while Redis is down and is written back when it returns.
* :class:`RedisRateLimiter` shares rate-limit windows between nodes.

Keys (P = the configured prefix, A = an app id, N = a node id): ``P:subs:A`` channel ->
sockets; ``P:members:A:C`` user -> sockets; ``P:info:A:C`` user -> user_info JSON;
``P:usercount:A`` presence channel -> users; ``P:ver:A`` changes with those counts;
``P:users:A`` user -> signed-in sockets; ``P:cache:A:C`` the cached event; ``P:node:N``
node N's share of all of those; ``P:nodes`` node -> lease expiry (ms, Redis clock);
``P:conns:N`` app -> node N's open connections; ``P:held:K`` a webhook held back;
``P:countturn:A:C`` the node whose turn it is to send C's subscription count. Needs a
standalone Redis (or a primary with replicas), not Redis Cluster mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from clarion import metrics
from clarion.broker.base import (
    Broker,
    BrokerUnavailable,
    CachedEvent,
    ChannelCounts,
    ChannelState,
    HeldKey,
    HeldMarks,
    JobStore,
    Joined,
    Left,
    MarkOp,
    Member,
    Occupied,
    PresenceFull,
    RateLimiter,
)
from clarion.broker.memory import MemoryRateLimiter, MemoryState
from clarion.config import redact_url
from clarion.protocol.names import listed_channels

log = logging.getLogger("clarion.redis")

SEP = "\x1f"  # between the parts of a per-node hash field; never in app ids or channels
NODE_ID_LENGTH = 16
CONNECTION_SHARE_INTERVAL = 1.0  # seconds between two exchanges of connection counts
Listener = Callable[[], Awaitable[None]]


class RedisLink:
    """The Redis connection every subsystem shares, its health, and reconnection."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.node_id = secrets.token_hex(NODE_ID_LENGTH // 2)
        # A blocking pool: a burst of subscribes (each a script call) waits for a free
        # connection instead of failing, which would read as Redis being down.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=10,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            health_check_interval=10,
            # CLIENT LIST shows which node each connection belongs to.
            client_name=f"clarion-{self.node_id}",
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
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

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

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
                    redact_url(self.url),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2) * random.uniform(0.8, 1.2)
                continue
            break
        self.up, self.up_since = True, time.monotonic()
        self._up_gauge.set(1)
        log.info("connected to Redis at %s as node %s", redact_url(self.url), self.node_id)
        self._watcher = asyncio.create_task(self._watch())

    def failed(self, exc: BaseException) -> None:
        """A subsystem saw Redis fail: mark the link down and start reconnecting."""
        if self._closed:
            return  # connections closing on the way out are not an outage
        if self.up:
            log.error("Redis connection lost (%s): serving local subscribers only", exc)
        self.up = False
        self._up_gauge.set(0)
        self._lost.set()

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
                    await self.client.ping()
                except (RedisError, OSError) as exc:
                    self.failed(exc)
                else:
                    self._rtt.observe(time.perf_counter() - started)
                continue
            self._lost.clear()
            delay = 0.2
            while True:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                try:
                    # Every pooled connection may predate the outage (a restarted Redis
                    # closed them all): drop them, or each would fail once, later, on a
                    # publish or a subscribe, and look like a new outage.
                    await self.client.connection_pool.disconnect()
                    await self.client.ping()
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
                    delay = min(5.0, delay * 2)
                    continue
                break
            self._lost.clear()  # failures reported while reconnecting are dealt with
            self.up = True
            self._up_gauge.set(1)
            log.info("Redis is back: this node's state is registered again")

    def closing(self) -> None:
        """Shutdown has begun: errors from here on are the connections going away."""
        self._closed = True

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            await stop_tasks([self._watcher])
        await self.client.aclose()


# --- fan-out ------------------------------------------------------------------------


class RedisBroker(Broker):
    needs_watch = True

    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link
        self._node = link.node_id.encode()
        self._outgoing: list[tuple[str, bytes]] = []
        self._sending = False
        self._wake = asyncio.Event()
        self._interest: dict[str, int] = {}
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel_prefix = link.key("ch") + ":"
        link.on_reconnect(self._resubscribe)

    def _redis_channel(self, app_id: str, channel: str) -> str:
        return f"{self._channel_prefix}{app_id}:{channel}"

    def ready(self) -> bool:
        # Not "whole": a node waiting for its peers after an outage still serves its
        # clients, and all nodes waiting at once must not leave the balancer with none.
        return self.link.up

    def publish(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        assert self._deliver is not None
        self._deliver(app_id, channel, frame, exclude)
        if not self.link.up:
            raise BrokerUnavailable(
                "the Redis link is down: delivered to this node's subscribers only"
            )
        payload = self._node + (exclude or "").encode() + b"\x00" + frame
        self._outgoing.append((self._redis_channel(app_id, channel), payload))
        if len(self._outgoing) == 1:
            self._wake.set()
        if not self.link.whole:
            raise BrokerUnavailable(
                "sent to the nodes on the Redis link, but not every node has reconnected "
                "since the outage: subscribers on those may miss it"
            )

    async def _writer(self) -> None:
        """Send queued frames in order, pipelined: one round trip per batch."""
        client = self.link.client
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outgoing = self._outgoing, []
            if not batch:
                continue
            self._sending = True
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for name, payload in batch:
                        pipe.publish(name, payload)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.error("lost %d frame(s) for other nodes: %s", len(batch), exc)
                self.link.failed(exc)
            except Exception:
                log.exception("lost %d frame(s) for other nodes", len(batch))
            finally:
                self._sending = False

    async def watch(self, app_id: str, channel: str) -> None:
        name = self._redis_channel(app_id, channel)
        count = self._interest.get(name, 0)
        self._interest[name] = count + 1
        if count or not self.link.up or self._pubsub is None:
            return
        future = self._confirm.get(name)
        if future is None:
            future = self._confirm[name] = asyncio.get_running_loop().create_future()
            try:
                await self._pubsub.subscribe(name)
            except (RedisError, OSError) as exc:
                self._confirm.pop(name, None)
                self.link.failed(exc)
                return
        # Until Redis confirms, a publish on another node could miss this node.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 2.0)

    def unwatch(self, app_id: str, channel: str) -> None:
        name = self._redis_channel(app_id, channel)
        count = self._interest.get(name, 0) - 1
        if count > 0:
            self._interest[name] = count
            return
        self._interest.pop(name, None)
        if self.link.up and self._pubsub is not None:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(name))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _unsubscribe(self, name: str) -> None:
        if name in self._interest:
            return  # watched again meanwhile
        try:
            await self._pubsub.unsubscribe(name)
        except (RedisError, OSError) as exc:
            self.link.failed(exc)

    async def _reader(self) -> None:
        while True:
            pubsub = self._pubsub
            if pubsub is None or not self.link.up:
                await asyncio.sleep(0.1)
                continue
            try:
                message = await pubsub.get_message(timeout=1.0)
            except Exception as exc:
                # Whatever breaks (redis-py raises RuntimeError for a subscription closed
                # under it), the reader goes on: if it stopped, this node would stop
                # hearing the others for good while looking healthy.
                if pubsub is self._pubsub:  # not one being replaced by a reconnection
                    log.warning("cluster subscription broken (%r): reconnecting", exc)
                    self.link.failed(exc)
                    await self._drop_pubsub()
                continue
            if message is not None:
                try:
                    self._receive(message)
                except Exception:
                    # A malformed message (another program on our prefix?) is skipped;
                    # the reader must go on, or this node stops hearing the others.
                    log.exception("skipped a malformed cluster message")

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        if kind == "subscribe":
            future = self._confirm.pop(name, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message" or not name.startswith(self._channel_prefix):
            return
        data: bytes = message["data"]
        if data[:NODE_ID_LENGTH] == self._node:
            return  # our own publish: already delivered locally
        app_id, _, channel = name[len(self._channel_prefix) :].partition(":")
        split = data.index(b"\x00", NODE_ID_LENGTH)
        exclude = data[NODE_ID_LENGTH:split].decode() or None
        assert self._deliver is not None
        self._deliver(app_id, channel, data[split + 1 :], exclude)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for future in self._confirm.values():
            if not future.done():
                future.set_result(None)
        self._confirm.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _resubscribe(self) -> None:
        await self._drop_pubsub()
        pubsub = self.link.client.pubsub()
        await pubsub.ping()
        # Channels watched while these subscribes were on their way are subscribed too
        # (watch() cannot, with no subscription in place): repeat until none is missing.
        done: set[str] = set()
        while missing := [name for name in self._interest if name not in done]:
            await pubsub.subscribe(*missing)
            done.update(missing)
        self._pubsub = pubsub

    async def start(self) -> None:
        self._pubsub = self.link.client.pubsub()
        await self._pubsub.ping()
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._reader())]

    async def stop(self) -> None:
        # Whatever is still queued goes out before the link closes (bounded wait).
        for _ in range(50):
            if not (self._outgoing or self._sending) or not self.link.up:
                break
            self._wake.set()
            await asyncio.sleep(0.01)
        await stop_tasks(self._tasks)
        await self._drop_pubsub()


# --- cluster state --------------------------------------------------------------------

# How many distinct users a presence channel has, kept in P:usercount:A next to the
# socket counts so that GET /channels?info=user_count reads two hashes, not one per channel.
#
# P:ver:A grows with every change to those counts (GET /channels replies are reused
# until it does). It never falls behind the Redis clock in microseconds, so that a Redis
# that lost its data, or came back from an older snapshot, or a replica that took over,
# never hands out again a number a node has seen.
_USER_COUNT = """
local function bump(ver)
  local t = redis.call('TIME')
  local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
  if redis.call('INCR', ver) < tonumber(now) then redis.call('SET', ver, now) end
end
local function set_user_count(usercount, members, channel)
  local n = redis.call('HLEN', members)
  if n > 0 then redis.call('HSET', usercount, channel, n)
  else redis.call('HDEL', usercount, channel) end
end
"""

_JOIN = (
    _USER_COUNT
    + """
local subs, node, members, info, usercount = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, app, user, user_info = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, sep = tonumber(ARGV[5]), ARGV[6]
if user ~= '' and redis.call('HEXISTS', members, user) == 0
   and redis.call('HLEN', members) >= limit then
  return {-1, 0, false}
end
local count = redis.call('HINCRBY', subs, channel, 1)
bump(KEYS[6])
redis.call('HINCRBY', node, 's' .. sep .. app .. sep .. channel, 1)
local added = 0
local everyone = false
if user ~= '' then
  if redis.call('HINCRBY', members, user, 1) == 1 then
    redis.call('HSET', info, user, user_info)
    set_user_count(usercount, members, channel)
    added = 1
  end
  redis.call('HINCRBY', node, 'm' .. sep .. app .. sep .. channel .. sep .. user, 1)
  everyone = redis.call('HGETALL', info)
end
return {count, added, everyone}
"""
)

_LEAVE = (
    _USER_COUNT
    + """
local subs, node, members, info, usercount = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, app, user, sep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local count = redis.call('HINCRBY', subs, channel, -1)
if count <= 0 then redis.call('HDEL', subs, channel) end
bump(KEYS[6])
local field = 's' .. sep .. app .. sep .. channel
if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
local removed = 0
if user ~= '' then
  local left = redis.call('HINCRBY', members, user, -1)
  if left <= 0 then
    redis.call('HDEL', members, user)
    redis.call('HDEL', info, user)
    set_user_count(usercount, members, channel)
    if left == 0 then removed = 1 end
  end
  field = 'm' .. sep .. app .. sep .. channel .. sep .. user
  if redis.call('HINCRBY', node, field, -1) <= 0 then redis.call('HDEL', node, field) end
end
local vacated = 0
if count == 0 then vacated = 1 end
return {vacated, removed}
"""
)

_SIGN = """
local users, node = KEYS[1], KEYS[2]
local user, app, delta, sep = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local count = redis.call('HINCRBY', users, user, delta)
if count <= 0 then redis.call('HDEL', users, user) end
local field = 'u' .. sep .. app .. sep .. user
if redis.call('HINCRBY', node, field, delta) <= 0 then redis.call('HDEL', node, field) end
return count
"""

# Subtract a node's whole contribution from the cluster counts; return what that implies
# ('v' channel vacated, 'r' member removed, 'o' user offline, fields joined by sep).
_SUBTRACT_NODE = (
    _USER_COUNT
    + """
-- Take n from a count; true when that leaves nothing (the field is then removed).
local function drop(key, field, n)
  if redis.call('HINCRBY', key, field, -n) > 0 then return false end
  redis.call('HDEL', key, field)
  return true
end
local function subtract_node(node, prefix, sep)
  local fields = redis.call('HGETALL', node)
  local out = {}
  local changed = {}
  for i = 1, #fields, 2 do
    local f, n = fields[i], tonumber(fields[i + 1])
    local parts = {}
    local start = 1
    for _ = 1, 3 do
      local at = string.find(f, sep, start, true)
      if not at then break end
      table.insert(parts, string.sub(f, start, at - 1))
      start = at + 1
    end
    table.insert(parts, string.sub(f, start))
    local kind, app = parts[1], parts[2]
    if kind ~= 'u' and not changed[app] then
      changed[app] = true
      bump(prefix .. ':ver:' .. app)
    end
    if kind == 's' then
      if drop(prefix .. ':subs:' .. app, parts[3], n) then
        table.insert(out, 'v' .. sep .. app .. sep .. parts[3])
      end
    elseif kind == 'm' then
      local channel, user = parts[3], parts[4]
      local key = prefix .. ':members:' .. app .. ':' .. channel
      if drop(key, user, n) then
        redis.call('HDEL', prefix .. ':info:' .. app .. ':' .. channel, user)
        set_user_count(prefix .. ':usercount:' .. app, key, channel)
        table.insert(out, 'r' .. sep .. app .. sep .. channel .. sep .. user)
      end
    elseif kind == 'u' then
      if drop(prefix .. ':users:' .. app, parts[3], n) then
        table.insert(out, 'o' .. sep .. app .. sep .. parts[3])
      end
    end
  end
  redis.call('DEL', node)
  return out
end
"""
)

# A node that died or left: only the survivor that removes it from the lease set does
# the subtraction (with ARGV[3] = '1'), so what it implies is reported exactly once.
_REAP = (
    _SUBTRACT_NODE
    + """
local nodes, node = KEYS[1], KEYS[2]
local node_id, prefix, check, sep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if check == '1' and redis.call('ZREM', nodes, node_id) == 0 then return false end
if check ~= '1' then redis.call('ZREM', nodes, node_id) end
return subtract_node(node, prefix, sep)
"""
)

# After an outage (or an expired lease): replace this node's share by what it holds
# now, and renew its lease, in one step, so that no other node ever sees the counts
# without this node's sockets. ARGV[5] is the share as JSON:
# [["s", app, channel, n], ["m", app, channel, user, n, user_info], ["u", app, user, n]].
_REGISTER = (
    _SUBTRACT_NODE
    + """
local nodes, node = KEYS[1], KEYS[2]
local node_id, prefix, sep, lease = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
subtract_node(node, prefix, sep)
local changed = {}
for _, e in ipairs(cjson.decode(ARGV[5])) do
  local kind, app = e[1], e[2]
  if kind ~= 'u' and not changed[app] then
    changed[app] = true
    bump(prefix .. ':ver:' .. app)
  end
  if kind == 's' then
    redis.call('HINCRBY', prefix .. ':subs:' .. app, e[3], e[4])
    redis.call('HINCRBY', node, 's' .. sep .. app .. sep .. e[3], e[4])
  elseif kind == 'm' then
    local members = prefix .. ':members:' .. app .. ':' .. e[3]
    redis.call('HINCRBY', members, e[4], e[5])
    redis.call('HSET', prefix .. ':info:' .. app .. ':' .. e[3], e[4], e[6])
    set_user_count(prefix .. ':usercount:' .. app, members, e[3])
    redis.call('HINCRBY', node, 'm' .. sep .. app .. sep .. e[3] .. sep .. e[4], e[5])
  elseif kind == 'u' then
    redis.call('HINCRBY', prefix .. ':users:' .. app, e[3], e[4])
    redis.call('HINCRBY', node, 'u' .. sep .. app .. sep .. e[3], e[4])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', nodes, now + lease, node_id)
return true
"""
)

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# 0 when this call takes the turn, else the milliseconds left of the current one.
_COUNT_TURN = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""

Reaped = Callable[[list[tuple[str, ...]]], Awaitable[None]]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _changes_share(
    method: Callable[Concatenate[RedisState, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[RedisState, _P], Coroutine[Any, Any, _R]]:
    """A change to this node's share (its local counts and their Redis copy): it waits
    while the share is being registered again, and registration waits for it to end, so
    that the share a registration reads and writes is never one change behind."""

    @functools.wraps(method)
    async def gated(self: RedisState, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        while self._registering is not None:
            await self._registering.wait()
        self._changing += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._changing -= 1
            if not self._changing and self._settled is not None:
                self._settled.set()

    return gated


class RedisState(ChannelState):
    def __init__(self, link: RedisLink, lease: float) -> None:
        self.link = link
        self.lease = lease
        self.local = MemoryState()  # this node's share; answers while Redis is down
        self._node_key = link.key("node", link.node_id)
        client = link.client
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._sign = client.register_script(_SIGN)
        self._reap = client.register_script(_REAP)
        self._register = client.register_script(_REGISTER)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._count_turn = client.register_script(_COUNT_TURN)
        self._on_reaped: Reaped | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn_task: asyncio.Task[None] | None = None
        link.peer_wait = lease  # a node not back within its lease is dead
        self._elsewhere: dict[str, int] = {}  # app -> connections on the other nodes
        self._info_codec = msgspec.json.Encoder()
        self._changing = 0  # changes to this node's share under way
        self._registering: asyncio.Event | None = None  # set when a registration ends
        self._settled: asyncio.Event | None = None  # set when no change is under way
        self._register_lock = asyncio.Lock()
        self._stopped = False
        # First: the gate closes before any other listener lets a change through.
        link.on_reconnect(self._register_again, first=True)

    def on_reaped(self, callback: Reaped) -> None:
        """Called with ('r', app, channel, user) / ('v', app, channel) / ('o', app, user)."""
        self._on_reaped = callback

    async def ready(self) -> bool:
        return self.link.up and self.link.whole and self._registering is None

    async def housekeeping(self) -> None:
        await self.local.housekeeping()

    def _keys(self, app_id: str, channel: str) -> list[str]:
        link = self.link
        return [
            link.key("subs", app_id),
            self._node_key,
            link.key("members", app_id, channel),
            link.key("info", app_id, channel),
            link.key("usercount", app_id),
            link.key("ver", app_id),
        ]

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script; None (and the link marked down) when Redis is not there."""
        if not self.link.up:
            return None
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return None

    @_changes_share
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member | None, member_limit: int
    ) -> Joined:
        info = self._info_codec.encode(member.user_info).decode() if member is not None else ""
        user = member.user_id if member is not None else ""
        result = await self._call(
            self._join,
            self._keys(app_id, channel),
            [channel, app_id, user, info, member_limit, SEP],
        )
        if result is not None and result[0] == -1:
            raise PresenceFull(channel)
        local = await self.local.join(app_id, channel, socket_id, member, 1 << 30)
        if result is None:
            return local
        members = None
        if member is not None and result[2]:
            flat = result[2]
            members = {
                _text(flat[i]): msgspec.json.decode(flat[i + 1]) for i in range(0, len(flat), 2)
            }
        return Joined(occupied=result[0] == 1, member_added=result[1] == 1, members=members)

    @_changes_share
    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str | None) -> Left:
        local = await self.local.leave(app_id, channel, socket_id, user_id)
        result = await self._call(
            self._leave, self._keys(app_id, channel), [channel, app_id, user_id or "", SEP]
        )
        if result is None:
            return local
        return Left(vacated=result[0] == 1, member_removed=result[1] == 1)

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        if self.link.up:
            try:
                flat = await self.link.client.hgetall(self.link.key("info", app_id, channel))
                return {_text(k): msgspec.json.decode(v) for k, v in flat.items()}
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return await self.local.presence_members(app_id, channel)

    async def _signed(self, app_id: str, user_id: str, delta: int) -> int | None:
        keys = [self.link.key("users", app_id), self._node_key]
        result = await self._call(self._sign, keys, [user_id, app_id, delta, SEP])
        return None if result is None else int(result)

    @_changes_share
    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        local = await self.local.sign_in(app_id, user_id, socket_id)
        count = await self._signed(app_id, user_id, 1)
        return local if count is None else count == 1

    @_changes_share
    async def sign_out(self, app_id: str, user_id: str, socket_id: str) -> bool:
        local = await self.local.sign_out(app_id, user_id, socket_id)
        count = await self._signed(app_id, user_id, -1)
        return local if count is None else count <= 0

    async def online(self, app_id: str, user_ids: list[str]) -> set[str]:
        if self.link.up and user_ids:
            try:
                counts = await self.link.client.hmget(self.link.key("users", app_id), user_ids)
                return {user for user, count in zip(user_ids, counts, strict=True) if count}
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return await self.local.online(app_id, user_ids)

    async def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: int) -> None:
        await self.local.cache_put(app_id, channel, event, data, ttl)
        if self.link.up:
            try:
                value = msgspec.json.encode([event, data])
                await self.link.client.set(self.link.key("cache", app_id, channel), value, ex=ttl)
            except (RedisError, OSError) as exc:
                self.link.failed(exc)

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        if self.link.up:
            key = self.link.key("cache", app_id, channel)
            try:
                async with self.link.client.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.ttl(key)
                    value, ttl = await pipe.execute()
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                if value is None:
                    return None
                event, data = msgspec.json.decode(value)
                return CachedEvent(event, data, max(0, int(ttl)))
        return await self.local.cache_get(app_id, channel)

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        if self.link.up:
            try:
                async with self.link.client.pipeline(transaction=False) as pipe:
                    pipe.hget(self.link.key("subs", app_id), channel)
                    pipe.hlen(self.link.key("members", app_id, channel))
                    sockets, users = await pipe.execute()
                return ChannelCounts(max(0, int(sockets or 0)), int(users))
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return await self.local.channel_counts(app_id, channel)

    async def claim_count_turn(self, app_id: str, channel: str, seconds: float) -> float:
        result = await self._call(
            self._count_turn, [self.link.key("countturn", app_id, channel)], [int(seconds * 1000)]
        )
        return 0.0 if result is None else int(result) / 1000

    async def listing_version(self, app_id: str) -> int | None:
        if self.link.up:
            try:
                value = await self.link.client.get(self.link.key("ver", app_id))
                return int(value or 0)
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return None  # this node's view alone: never reuse a reply for it

    async def occupied_channels(self, app_id: str, prefix: str, with_users: bool) -> Occupied:
        if self.link.up:
            try:
                # Keys and values of one hash in one transaction come in the same order;
                # two flat lists parse far faster than HGETALL's 10,000-entry dict.
                async with self.link.client.pipeline(transaction=True) as pipe:
                    pipe.get(self.link.key("ver", app_id))
                    pipe.hkeys(self.link.key("subs", app_id))
                    pipe.hvals(self.link.key("subs", app_id))
                    if with_users:
                        pipe.hkeys(self.link.key("usercount", app_id))
                        pipe.hvals(self.link.key("usercount", app_id))
                    replies = await pipe.execute()
                version = int(replies[0] or 0)
                channels, counts = _texts(replies[1]), _texts(replies[2])
                keep = listed_channels(channels, prefix)
                if keep is not None:
                    channels, counts = [channels[i] for i in keep], [counts[i] for i in keep]
                users = None
                if with_users:
                    per_channel = dict(zip(_texts(replies[3]), _texts(replies[4]), strict=True))
                    users = [per_channel.get(c, "0") for c in channels]
                return Occupied(channels, counts, users, version)
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        local = await self.local.occupied_channels(app_id, prefix, with_users)
        return dataclasses.replace(local, version=None)  # this node's view: never kept

    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        if self.link.up:
            try:
                keys = await self.link.client.hkeys(self.link.key("members", app_id, channel))
                return [_text(k) for k in keys]
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return await self.local.presence_user_ids(app_id, channel)

    # --- leases -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._leases())

    def share_connections(self, mine: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Every second, write this node's open connections per app (``mine()``) and
        read the other nodes': the returned dict holds their sum per app, kept current,
        so that an app's ``max_connections`` holds for the cluster (within a second).

        ``P:conns:N`` expires a lease after its last write: a dead node's connections
        stop counting when its lease would, with no reaping needed.
        """
        self._conn_task = asyncio.create_task(self._share_connections(mine))
        return self._elsewhere

    def _note_peers(self, present: set[str]) -> None:
        """Track the other nodes: after an outage, those seen before it come back."""
        link = self.link
        link.waiting_for -= present
        if link.whole and present != link.peers:
            log.info(
                "cluster: %d other node(s) (joined %s, gone %s)",
                len(present),
                sorted(present - link.peers) or "-",
                sorted(link.peers - present) or "-",
            )
            link.peers = present

    async def _share_connections(self, mine: Callable[[], dict[str, int]]) -> None:
        client, link = self.link.client, self.link
        own = link.key("conns", link.node_id)
        while True:
            # Faster while peers are awaited after an outage: publishes answer 503 until
            # this node has seen them back.
            waiting = link.waiting_for and not link.whole
            await asyncio.sleep(
                CONNECTION_SHARE_INTERVAL / 10 if waiting else CONNECTION_SHARE_INTERVAL
            )
            if not link.up:
                continue  # the last known counts stand until Redis is back
            try:
                counts: dict[Any, int] = {app: n for app, n in mine().items() if n > 0}
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(own)
                    if counts:
                        pipe.hset(own, mapping=counts)
                        pipe.pexpire(own, int(self.lease * 1000))
                    pipe.zrange(link.key("nodes"), 0, -1)
                    nodes = (await pipe.execute())[-1]
                others = [_text(n) for n in nodes if _text(n) != link.node_id]
                self._note_peers(set(others))
                async with client.pipeline(transaction=False) as pipe:
                    for node in others:
                        pipe.hgetall(link.key("conns", node))
                    replies = await pipe.execute() if others else []
                totals: dict[str, int] = {}
                for reply in replies:
                    for app, n in reply.items():
                        totals[_text(app)] = totals.get(_text(app), 0) + int(n)
                self._elsewhere.clear()
                self._elsewhere.update(totals)
            except (RedisError, OSError) as exc:
                link.failed(exc)
            except Exception:  # the exchange must go on, whatever happened
                log.exception("exchanging connection counts failed; retrying")

    async def _beat(self) -> list[str]:
        result = await self._call(
            self._heartbeat,
            [self.link.key("nodes")],
            [self.link.node_id, int(self.lease * 1000)],
        )
        return [_text(n) for n in result or []]

    async def _leases(self) -> None:
        """Renew this node's lease, and reap nodes whose lease ran out."""
        while True:
            await asyncio.sleep(self.lease / 4)
            try:
                if not await self._still_member():
                    # Our lease ran out (a stalled loop?) and others removed our share:
                    # put it back as after an outage.
                    log.warning("this node's lease had expired: registering its state again")
                    await self._register_again()
                for dead in await self._beat():
                    if dead != self.link.node_id:
                        await self._reap_node(dead)
            except Exception:
                log.exception("lease renewal failed; retrying")

    async def _still_member(self) -> bool:
        if not self.link.up:
            return True  # nothing to tell while the link is down
        score = await self.link.client.zscore(self.link.key("nodes"), self.link.node_id)
        return score is not None

    async def _reap_node(self, node_id: str) -> None:
        result = await self._call(
            self._reap,
            [self.link.key("nodes"), self.link.key("node", node_id)],
            [node_id, self.link.prefix, "1", SEP],
        )
        if not result:
            return  # another node got there first
        log.warning("node %s stopped renewing its lease: its sockets were removed", node_id)
        if self._on_reaped is not None:
            await self._on_reaped(_reaped_items(result))

    async def _register_again(self) -> None:
        """After an outage: replace this node's share in Redis by what it holds now.

        Changes wait from the start (a leave of a socket that joined during the outage,
        reaching Redis first, would count against the other nodes' sockets)."""
        async with self._register_lock:
            self._registering = gate = asyncio.Event()
            try:
                if self._stopped:
                    return  # left the cluster already: nothing to put back
                while self._changing:
                    self._settled = asyncio.Event()
                    await self._settled.wait()
                self._settled = None
                await self._write_share()
            finally:
                self._registering = None
                gate.set()

    async def _write_share(self) -> None:
        sockets, members_of, signed_in = self.local.shares()
        share: list[list[Any]] = []
        for app_id, channels in sockets.items():
            share.extend(["s", app_id, channel, n] for channel, n in channels.items())
        for (app_id, channel), members in members_of.items():
            share.extend(
                ["m", app_id, channel, user, n, self._info_codec.encode(info).decode()]
                for user, (info, n) in members.items()
            )
        share.extend(["u", app_id, user, n] for (app_id, user), n in signed_in.items())
        await self._register(
            keys=[self.link.key("nodes"), self._node_key],
            args=[
                self.link.node_id,
                self.link.prefix,
                SEP,
                int(self.lease * 1000),
                self._info_codec.encode(share),
            ],
        )

    async def stop(self) -> None:
        """Leave the cluster: this node's share is removed at once (not after its lease),
        and what that implies (members removed, channels vacated) is reported."""
        self._stopped = True
        self.link.waiting_for.clear()  # leaving: what is held is decided as things are
        await stop_tasks([t for t in (self._task, self._conn_task) if t is not None])
        if self.link.up:
            with contextlib.suppress(RedisError, OSError):
                await self.link.client.delete(self.link.key("conns", self.link.node_id))
        result = await self._call(
            self._reap,
            [self.link.key("nodes"), self._node_key],
            [self.link.node_id, self.link.prefix, "0", SEP],
        )
        if result and self._on_reaped is not None:
            await self._on_reaped(_reaped_items(result))


class RedisRateLimiter(RateLimiter):
    """One-second windows counted in Redis, shared by the nodes (local while Redis is down)."""

    _SCRIPT = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end
if used > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
"""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._script = link.client.register_script(self._SCRIPT)
        self._fallback = MemoryRateLimiter()

    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        if self.link.up:
            window = int(time.time())  # the nodes' wall clocks agree well enough for 1 s
            try:
                allowed = await self._script(
                    keys=[self.link.key("rate", key, str(window))], args=[amount, per_second]
                )
                return bool(allowed)
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        return await self._fallback.consume(key, amount, per_second)


class RedisJobStore(JobStore):
    """Webhook jobs in Redis: ``P:wh:jobs:Q`` id -> payload, ``P:wh:due:Q`` id -> due time (ms,
    Redis clock). A claim pushes the due time one lease ahead, so a job whose node dies
    mid-delivery becomes due again for the others."""

    _CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    table.insert(out, id)
    table.insert(out, payload)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

    _ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
local dropped = 0
while redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[3]) do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  redis.call('HDEL', KEYS[2], oldest[1])
  dropped = dropped + 1
end
return dropped
"""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._claim = link.client.register_script(self._CLAIM)
        self._add = link.client.register_script(self._ADD)

    def _keys(self, queue: str) -> list[str]:
        return [self.link.key("wh", "due", queue), self.link.key("wh", "jobs", queue)]

    async def add(self, queue: str, payload: bytes, limit: int) -> int:
        job_id = secrets.token_hex(8)
        return int(await self._add(keys=self._keys(queue), args=[job_id, payload, limit, 0]))

    async def claim(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        flat = await self._claim(keys=self._keys(queue), args=[count, int(lease * 1000)])
        return [(_text(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def done(self, queue: str, job_id: str) -> None:
        due, jobs = self._keys(queue)
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.zrem(due, job_id)
            pipe.hdel(jobs, job_id)
            await pipe.execute()

    async def retry(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        await self._add(keys=self._keys(queue), args=[job_id, payload, 1 << 30, int(delay * 1000)])

    async def size(self, queue: str) -> int:
        return int(await self.link.client.zcard(self.link.key("wh", "due", queue)))


class RedisHeldMarks(HeldMarks):
    """``P:held:K`` for each webhook held back: the holding node's token, or "taken",
    with an expiry a little past the delay (a node that dies while holding leaves
    nothing behind for long)."""

    MARGIN = 10.0  # seconds a mark outlives its delay: a slow release still finds it

    _TAKE = """
local mark = redis.call('GET', KEYS[1])
if not mark or mark == 'taken' then return 0 end
redis.call('SET', KEYS[1], 'taken', 'KEEPTTL')
return 1
"""

    # KEYS: the mark, the cluster hash whose field ARGV[1] must be absent for the event
    # to hold; ARGV[2]: the hold's token.
    _RELEASE = """
local mark = redis.call('GET', KEYS[1])
if mark then
  if mark ~= ARGV[2] then return 0 end
  redis.call('DEL', KEYS[1])
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
return 1
"""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._take = link.client.register_script(self._TAKE)
        self._release = link.client.register_script(self._RELEASE)

    def _mark_key(self, key: HeldKey) -> str:
        return self.link.key("held", SEP.join(key))

    def _still_true(self, key: HeldKey) -> tuple[str, str]:
        """The cluster hash and field whose absence means the held event still holds."""
        if key.name == "channel_vacated":
            return self.link.key("subs", key.app_id), key.channel
        if key.name == "member_removed":
            return self.link.key("members", key.app_id, key.channel), key.user_id
        return self.link.key("users", key.app_id), key.user_id

    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        if not self.link.up:
            return None
        # After Redis comes back, no release is decided before every node is back on
        # the link (a restarted Redis starts empty: their sockets are not counted yet).
        settled = self.link.whole
        sent: list[int] = []  # indexes of the ops sent to Redis, in order
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for index, op in enumerate(ops):
                    mark = self._mark_key(op.key)
                    if op.kind == "hold":
                        pipe.set(mark, op.token, px=int((op.seconds + self.MARGIN) * 1000))
                    elif op.kind == "take":
                        await self._take(keys=[mark], client=pipe)
                    elif settled:
                        state, field = self._still_true(op.key)
                        await self._release(keys=[mark, state], args=[field, op.token], client=pipe)
                    else:
                        continue
                    sent.append(index)
                replies = await pipe.execute() if sent else []
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return None
        outcome: list[bool | None] = [None] * len(ops)
        for index, reply in zip(sent, replies, strict=True):
            outcome[index] = bool(reply)
        return outcome


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


def _reaped_items(result: list[Any]) -> list[tuple[str, ...]]:
    items = [tuple(_text(entry).split(SEP, 3)) for entry in result]
    # member_removed before channel_vacated, as for a normal leave.
    items.sort(key=lambda item: "rvo".index(item[0]))
    return items


def _texts(values: list[Any]) -> list[str]:
    """Decode many names at once (names never contain NUL)."""
    if not values:
        return []
    if isinstance(values[0], str):
        return list(values)
    return b"\0".join(values).decode().split("\0")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
