"""The single-process broker: a publish goes straight back to this node's hub, and state
questions are answered from the hub's own tables.
"""

from __future__ import annotations

import time
from typing import Protocol

from clarion.broker.base import Broker, ChannelCounts, RateLimiter, StateStore


class LocalView(Protocol):
    """What the memory state store reads from the local hub."""

    def channel_counts(self, app_id: str, channel: str) -> ChannelCounts: ...

    def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]: ...

    def presence_user_ids(self, app_id: str, channel: str) -> list[str]: ...


class MemoryBroker(Broker):
    def publish(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        assert self._deliver is not None, "MemoryBroker.bind() was not called"
        self._deliver(app_id, channel, frame, exclude)


class MemoryState(StateStore):
    def __init__(self, view: LocalView) -> None:
        self._view = view

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        return self._view.channel_counts(app_id, channel)

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return self._view.occupied_channels(app_id, prefix)

    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        return self._view.presence_user_ids(app_id, channel)


class MemoryRateLimiter(RateLimiter):
    """Token buckets in this process: capacity ``per_second``, refilled continuously."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}

    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(per_second), now]
        tokens = min(float(per_second), bucket[0] + (now - bucket[1]) * per_second)
        bucket[1] = now
        if tokens < amount:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - amount
        return True
