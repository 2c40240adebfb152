"""Redis Sentinel: the link's connections go to the master a set of sentinels names, and
follow it through a failover.

:class:`SentinelEndpoint` is the link's :class:`~clarion.cluster.redis.link.Endpoint` when
``[cluster] sentinels`` is set. Every new connection asks the sentinels where the master
is now (redis-py's ``SentinelManagedConnection``), so reconnecting after the old master
died reaches the new one; nothing else changes. What a failover means for the cluster is
the link's business, as for any outage: a failover is an outage of the old master (the
promoted replica may lack its last writes, or hold stale ones), so the link registers
this node's state again on the new master and the broker subscribes again there.

Two things only Sentinel needs, both through the endpoint:

* :meth:`SentinelEndpoint.moved`, checked with the health ping, notices a master that
  moved while the old one still answers (a failover that demoted it, a manual
  ``SENTINEL FAILOVER``): the link then goes through its outage path;
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
from redis.exceptions import RedisError

from clarion.config import redact_url, sentinel_url

log = logging.getLogger("clarion.redis")

# Seconds a sentinel has to connect and answer: a dead one must not hold up asking the
# next one, nor the link's health check.
SENTINEL_TIMEOUT = 1.0


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's pool of connections to the master Sentinel names, blocking when full
    like the link's direct pool (a burst of subscribes waits rather than fails)."""


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
        old = pool.master_address
        return f"the sentinels moved master {self.master!r} from {old[0]}:{old[1]} to " + (
            f"{address[0]}:{address[1]}"
        )

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
