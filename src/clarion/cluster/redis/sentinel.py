"""Redis Sentinel: the link's connections go to the master a set of sentinels names, and
follow it through a failover.

:class:`SentinelEndpoint` is the link's :class:`~clarion.cluster.redis.link.Endpoint` when
``[cluster] sentinels`` is set. Every new connection asks the sentinels where the master
is now (redis-py's ``SentinelManagedConnection``), so reconnecting after the old master
died reaches the new one; nothing else changes. What a failover means for the cluster is
the link's business, as for any outage: a failover is an outage of the old master (the
promoted replica may lack its last writes, or hold stale ones), so the link registers
this node's state again on the new master and the broker subscribes again there.

What only Sentinel needs, through the endpoint:

* connections never move to a new master one by one (redis-py's pool would, with the
  next connection it makes): a node writing to the new master while its subscription,
  or another node, is still on the old one would answer 200 for a publish some nodes
  never see. The pool keeps the master it agreed on until the link reconnects after an
  outage (:meth:`SentinelEndpoint.follow`); a new connection that finds it moved fails;
* :meth:`SentinelEndpoint.moved`, checked with the health ping, notices a master that
  moved while the old one still answers (a manual ``SENTINEL FAILOVER``: the sentinels
  demote the old master only seconds later): the link then goes through its outage path;
* :meth:`SentinelEndpoint.current` tells the broker its pub/sub connection still goes to
  the old master, so that it is replaced rather than kept.

``redis_url`` gives the master's password, database and TLS options (its host is not
used); each sentinel entry its own (a sentinel's password may differ from the master's).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError, RedisError

from clarion.config import redact_url, sentinel_url

log = logging.getLogger("clarion.redis")

# Seconds a sentinel has to connect and answer: a dead one must not hold up asking the
# next one, nor the link's health check.
SENTINEL_TIMEOUT = 1.0


class MasterMoved(ConnectionError):
    """The sentinels name another master than the one this node's connections agreed on."""


def _where(address: Any) -> str:
    return f"{address[0]}:{address[1]}"


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's pool of connections to the master Sentinel names, blocking when full
    like the link's direct pool (a burst of subscribes waits rather than fails)."""

    async def get_master_address(self) -> Any:
        """Where new connections go: the master the link agreed on, even if the sentinels
        name another now. redis-py would switch quietly, with the next connection made;
        this node would then write to the new master while its subscription, and maybe
        the other nodes, are still on the old one (a publish answered 200 and lost). A
        move is an outage instead: the link's next reconnection (:meth:`follow`) takes
        the new address."""
        address = await self.sentinel_manager.discover_master(self.service_name)
        if self.master_address is None:
            self.master_address = address
            # Idle connections may go to an earlier master: they reconnect when used.
            await self.disconnect(inuse_connections=False)
        elif tuple(address) != tuple(self.master_address):
            raise MasterMoved(
                f"the sentinels moved master {self.service_name!r} from "
                f"{_where(self.master_address)} to {_where(address)}"
            )
        return address

    def follow(self) -> None:
        """The next connection takes the master the sentinels name, wherever it is."""
        self.master_address = None

    async def ensure_connection(self, connection: Any) -> None:
        # A connection that was in use when the master moved comes back to the pool still
        # connected to the old one (redis-py's asyncio pool does not check): reused, it
        # would write to a master that is no more, or is about to be demoted. Closed, it
        # asks the sentinels on connecting again.
        if (
            connection.is_connected
            and self.master_address is not None
            and (connection.host, connection.port) != self.master_address
        ):
            await connection.disconnect()
        await super().ensure_connection(connection)


class SentinelEndpoint:
    """The master ``master`` of the sentinels at ``sentinels`` (``host:port`` or URLs),
    with the master's options from ``url``."""

    def __init__(self, url: str, sentinels: list[str], master: str) -> None:
        self.url = url
        self.urls = [sentinel_url(entry) for entry in sentinels]
        self.master = master
        self.sentinel = Sentinel([])  # type: ignore[no-untyped-call]  # redis-py: untyped
        # One client per sentinel, each from its own URL (password, TLS options).
        self.sentinel.sentinels = [
            aioredis.Redis.from_url(
                entry,
                socket_connect_timeout=SENTINEL_TIMEOUT,
                socket_timeout=SENTINEL_TIMEOUT,
            )
            for entry in self.urls
        ]
        self._pool: BlockingSentinelPool | None = None

    def pool(self, options: dict[str, Any]) -> BlockingConnectionPool:
        master = dict(parse_url(self.url))
        for unused in ("host", "port", "path"):
            master.pop(unused, None)
        # rediss://: the sentinel pool picks its TLS connection class from "ssl".
        if master.pop("connection_class", None) is SSLConnection:
            master["ssl"] = True
        self._pool = BlockingSentinelPool(  # type: ignore[no-untyped-call]
            self.master, self.sentinel, is_master=True, **{**master, **options}
        )
        return self._pool

    def describe(self) -> str:
        where = self._pool.master_address if self._pool is not None else None
        now = f" (now {where[0]}:{where[1]})" if where else ""
        sentinels = ", ".join(redact_url(entry) for entry in self.urls)
        return f"master {self.master!r} of sentinels {sentinels}{now}"

    async def moved(self) -> str | None:
        pool = self._pool
        if pool is None or pool.master_address is None:
            return None  # not connected yet: the next connection asks anyway
        try:
            async with asyncio.timeout(2 * SENTINEL_TIMEOUT):
                address = await self.sentinel.discover_master(self.master)
        except (RedisError, OSError):
            # No sentinel answers, or they see the master down (a failover under way):
            # whether the master still answers, the health ping tells.
            return None
        if tuple(address) == tuple(pool.master_address):
            return None
        return (
            f"the sentinels moved master {self.master!r} from {_where(pool.master_address)} "
            f"to {_where(address)}"
        )

    def follow(self) -> None:
        if self._pool is not None:
            self._pool.follow()

    def current(self, connection: Any) -> bool:
        pool = self._pool
        if connection is None or pool is None:
            return False
        return (connection.host, connection.port) == pool.master_address

    async def close(self) -> None:
        try:
            await self.sentinel.aclose()
        except (RedisError, OSError) as exc:
            log.debug("closing the sentinel connections: %r", exc)
