"""Rate limits shared by the nodes: one-second windows counted in Redis (``rate.lua``),
and this node's own buckets while Redis is down."""

from __future__ import annotations

import time

from clarion.cluster.interfaces import RateLimiter
from clarion.cluster.memory import MemoryRateLimiter
from clarion.cluster.redis import scripts
from clarion.cluster.redis.link import RedisLink


class RedisRateLimiter(RateLimiter):
    """One-second windows counted in Redis, shared by the nodes (local while Redis is down)."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._script = scripts.register(link.client, "rate")
        self._fallback = MemoryRateLimiter()

    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        return await self.link.guarded(
            lambda: self._consume(key, amount, per_second),
            lambda: self._fallback.consume(key, amount, per_second),
        )

    async def _consume(self, key: str, amount: int, per_second: int) -> bool:
        window = int(time.time())  # the nodes' wall clocks agree well enough for 1 s
        allowed = await self._script(
            keys=[self.link.keys.rate(key, window)], args=[amount, per_second]
        )
        return bool(allowed)
