"""Interfaces every broker implements: ``Broker`` moves frames between nodes, ``StateStore``
answers questions about channels for the whole cluster.

The hub publishes through a Broker and never talks to another node itself; the HTTP API
asks a StateStore and never walks local sockets. Swapping the in-memory implementation
for a clustered one changes nothing above this package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

# (app_id, channel, frame bytes, socket_id to skip or None) -> None
Deliver = Callable[[str, str, bytes, str | None], None]


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscription_count: int
    user_count: int


class Broker(ABC):
    """Fan-out between nodes. ``publish`` reaches the local hub and every other node's."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def bind(self, deliver: Deliver) -> None:
        """Called once by the hub: where frames for this node's subscribers go."""
        self._deliver = deliver

    @abstractmethod
    def publish(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Deliver ``frame`` to every subscriber of ``channel`` on every node, in order.

        Synchronous on purpose: frames of one channel leave in the order they were
        published, and a clustered broker queues them for its connection. It raises
        when the frame cannot leave this node, so the HTTP caller learns of it.
        """

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to whatever the broker needs."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class StateStore(ABC):
    """Channel occupancy and presence, as the HTTP API reports them."""

    @abstractmethod
    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts: ...

    @abstractmethod
    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]: ...

    @abstractmethod
    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]: ...

    async def ready(self) -> bool:
        return True


class RateLimiter(ABC):
    """Rate limits with a one-second horizon, shared by every node that shares the limiter."""

    @abstractmethod
    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        """Take ``amount`` from bucket ``key`` (refilled at ``per_second``); False if short."""
