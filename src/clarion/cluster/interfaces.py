"""Interfaces of the one door to other nodes.

* :class:`Broker` moves frames between nodes. The hub publishes through it and never
  talks to another node itself.
* :class:`ChannelState` holds what is true for the whole cluster: how many sockets a
  channel has, the presence members with a socket count per user, who is signed in, and
  the last event of cache channels. The hub asks it before deciding what a subscribe or
  a leave means (occupied? first socket of this user?), and the HTTP API answers
  queries from it.
* :class:`RateLimiter` counts requests against per-app limits.
* :class:`JobStore` and :class:`HeldMarks` let the nodes share the webhook outbox.
* :data:`Reaped` is what removing a dead node's sockets from the cluster state implied
  (:class:`MemberRemoved`, :class:`ChannelVacated`, :class:`UserOffline`): the hub turns
  each into the frames and webhooks a normal leave would have caused.

In-memory implementations live in :mod:`clarion.cluster.memory`, the Redis ones in
:mod:`clarion.cluster.redis`; swapping one for the other changes nothing above this package.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

# (app_id, channel, frame bytes, socket_id to skip or None) -> None
Deliver = Callable[[str, str, bytes, str | None], None]
# The admin console's rows (clarion.admin.taps): (app_id, row) from another node, and
# (app_id, watched) when whether another node has a console open on the app changes.
RowReceived = Callable[[str, bytes], None]
WatchedElsewhere = Callable[[str, bool], None]


def node_name() -> str:
    """The name a node goes by in the admin console's rows and node list: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node of the cluster as the admin console lists it."""

    id: str
    name: str
    connections: int
    up_since: float | None  # Unix time the node started, when it said
    heartbeat_age: float  # seconds since it last renewed its lease
    this: bool  # the node asking


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscription_count: int
    user_count: int


@dataclass(frozen=True, slots=True)
class Occupied:
    """An app's occupied channels as parallel lists, one entry per channel.

    No object per channel: GET /channels over 10,000 channels must stay a few
    milliseconds, and 10,000 small objects cost more than that (and wake the collector).
    """

    names: list[str]
    # Counts as decimal text: how Redis holds them and how the reply writes them.
    subscription_counts: list[str]
    user_counts: list[str] | None  # only when asked for (presence channels)
    # The listing version these counts were read at (see listing_version); None when
    # they are not the whole cluster's (this node's view while Redis is down).
    version: int | None


@dataclass(frozen=True, slots=True)
class Member:
    """A presence member: user_id (always a string) and the user_info given at join."""

    user_id: str
    user_info: Any


@dataclass(slots=True)
class Joined:
    """What a socket joining a channel changed, cluster-wide."""

    occupied: bool  # the channel went from 0 to 1 socket
    member_added: bool  # presence: the user's first socket in the channel
    members: dict[str, Any] | None  # presence: every member's user_info, joiner included
    # The cluster-wide version of this change, when the state orders changes: the
    # members above hold every change of a version <= this one (see Hub.deliver).
    version: int | None = None
    # The added member had left within the hold-back given to leave() (on any node):
    # its member_removed and this member_added webhooks cancel out.
    returned: bool = False


@dataclass(slots=True)
class Left:
    vacated: bool  # the channel has no socket left
    member_removed: bool  # presence: that was the user's last socket in the channel
    version: int | None = None  # as Joined.version


@dataclass(frozen=True, slots=True)
class CachedEvent:
    event: str
    data: str
    ttl: int  # seconds left


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """A reaped node held the user's last sockets in a presence channel."""

    app_id: str
    channel: str
    user_id: str
    version: int | None = None  # as Joined.version


@dataclass(frozen=True, slots=True)
class ChannelVacated:
    """A reaped node held the channel's last sockets."""

    app_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class UserOffline:
    """A reaped node held the signed-in user's last sockets."""

    app_id: str
    user_id: str


# One change implied by reaping a node. A reaper reports every MemberRemoved before any
# ChannelVacated, as a normal leave does.
Reaped = MemberRemoved | ChannelVacated | UserOffline
# Told what the sockets of a node that died or left meant (see ChannelState.on_reaped).
OnReaped = Callable[[list[Reaped]], Awaitable[None]]


class PresenceFull(Exception):
    """The presence channel already holds the maximum number of distinct members."""


class BrokerUnavailable(Exception):
    """A frame could not leave this node (the cluster link is down)."""


class Broker(ABC):
    """Fan-out between nodes. ``publish`` reaches the local hub and every other node's."""

    # True when watch() does something (the hub skips the call otherwise).
    needs_watch = False

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def bind(self, deliver: Deliver) -> None:
        """Called once by the hub: where frames for this node's subscribers go."""
        self._deliver = deliver

    @abstractmethod
    def publish(
        self, app_id: str, channel: str, frame: bytes, exclude: str | None, confirm: bool = False
    ) -> Awaitable[None] | None:
        """Deliver ``frame`` to every subscriber of ``channel`` on every node, in order.

        Synchronous on purpose: frames of one channel leave in the order they were
        published, and a clustered broker queues them for its connection. This node's
        subscribers get the frame before the call returns. Raises BrokerUnavailable
        when the frame cannot reach the other nodes.

        With ``confirm`` (an HTTP publish, which answers 200 only for work done), a
        broker that sends frames to other nodes returns an awaitable that completes once
        they took the frame, or raises BrokerUnavailable within its publish timeout. None
        means there is nothing to wait for (a single process: delivery is done), so the
        in-memory path stays free of coroutines. Without ``confirm`` (client events, the
        hub's own frames) the frame is sent as well as can be, never waited for.
        """

    async def watch(self, app_id: str, channel: str) -> None:  # noqa: B027 - optional hook
        """This node has its first local subscriber of ``channel``.

        Returns once frames published on other nodes reach this one.
        """

    def unwatch(self, app_id: str, channel: str) -> None:  # noqa: B027 - optional hook
        """This node's last local subscriber of ``channel`` left."""

    def ready(self) -> bool:
        """False while frames cannot reach the other nodes."""
        return True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to whatever the broker needs."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # --- the admin console's rows, between nodes (a single process has no other) ----

    def bind_rows(  # noqa: B027 - optional hook
        self, received: RowReceived, watched_elsewhere: WatchedElsewhere
    ) -> None:
        """Called once by the node: where rows from other nodes go, and who is told
        when another node opens (or closes the last) console on an app."""

    async def watch_rows(self, app_id: str) -> None:  # noqa: B027 - optional hook
        """A console opened on ``app_id`` here: rows of the other nodes come to this one
        (their taps start formatting them) until as many unwatch_rows calls."""

    def unwatch_rows(self, app_id: str) -> None:  # noqa: B027 - optional hook
        """A console on ``app_id`` closed here."""

    def publish_row(self, app_id: str, row: bytes) -> None:  # noqa: B027 - optional hook
        """Send a row of this node to the nodes watching ``app_id``: as well as can be,
        never waited for, dropped rather than queued behind frames."""


class ChannelState(ABC):
    """Cluster-wide channel, presence, user and cache state, keyed by socket id."""

    @abstractmethod
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member | None, member_limit: int
    ) -> Joined:
        """Count ``socket_id`` in ``channel``; raise PresenceFull for a new user over the limit."""

    @abstractmethod
    async def leave(
        self, app_id: str, channel: str, socket_id: str, user_id: str | None, hold: float = 0.0
    ) -> Left:
        """Stop counting ``socket_id`` in ``channel``. When it was ``user_id``'s last
        socket there, a join of that user within ``hold`` seconds is a return
        (``Joined.returned``); a single process leaves that to the webhook outbox."""

    @abstractmethod
    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        """user_id -> user_info of every member of a presence channel."""

    @abstractmethod
    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in socket; True when it is the user's first (they came online)."""

    @abstractmethod
    async def sign_out(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Forget a signed-in socket; True when it was the user's last (they went offline)."""

    @abstractmethod
    async def online(self, app_id: str, user_ids: list[str]) -> set[str]:
        """Which of ``user_ids`` are signed in somewhere."""

    @abstractmethod
    async def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: int) -> None:
        """Remember the last event of a cache channel for ``ttl`` seconds."""

    @abstractmethod
    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None: ...

    @abstractmethod
    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts: ...

    async def claim_count_turn(self, app_id: str, channel: str, seconds: float) -> float:
        """Take the turn to send a channel's subscription count for the next ``seconds``:
        0 when taken, else the seconds until the current turn ends. One node's turn
        keeps the cluster at one count event per interval."""
        return 0.0

    async def listing_version(self, app_id: str) -> int | None:
        """A number that grows whenever the app's channel or member counts change, so
        that a GET /channels reply can be reused until then; None: do not reuse."""
        return None

    @abstractmethod
    async def occupied_channels(self, app_id: str, prefix: str, with_users: bool) -> Occupied:
        """Channels with at least one socket whose names start with ``prefix``
        (server-to-user channels are never listed)."""

    @abstractmethod
    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]: ...

    async def ready(self) -> bool:
        return True

    async def housekeeping(self) -> None:  # noqa: B027 - optional hook
        """Called every half minute or so: drop what has expired."""

    # --- the node's membership of the cluster (a single process has no other nodes) ---

    def on_reaped(self, callback: OnReaped) -> None:  # noqa: B027 - optional hook
        """Report to ``callback`` what the sockets of a node that died or left meant
        (members removed, channels vacated, users offline). Set once, before start()."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Join the cluster: this node's share of the state is kept alive from now on."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Leave the cluster: this node's share is removed at once, with its events."""

    async def nodes(self) -> list[NodeInfo] | None:
        """The nodes of the cluster, for the admin console; None: a single process."""
        return None

    def share_connections(self, mine: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Share this node's open connections per app (``mine()``) with the other nodes;
        the returned dict is the sum of theirs per app, kept current, so that an app's
        ``max_connections`` holds for the cluster. No other nodes: it stays empty."""
        return {}


class RateLimiter(ABC):
    """Rate limits with a one-second horizon, shared by every node that shares the limiter."""

    @abstractmethod
    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        """Take ``amount`` from bucket ``key`` (refilled at ``per_second``); False if short."""


class HeldKey(NamedTuple):
    """A held webhook: channel_vacated (user_id ""), member_removed, user_offline
    (channel "")."""

    app_id: str
    name: str
    channel: str
    user_id: str


@dataclass(frozen=True, slots=True)
class MarkOp:
    """One operation on the marks of held webhooks; ``token`` tells one hold from another.

    * ``hold``: a node holds the event back for ``seconds``; its mark (the token) lasts
      a little longer.
    * ``take``: the opposite event came; True if a live mark was there (the pair cancels,
      the mark stays as "taken" until it expires).
    * ``release``: the delay of hold ``token`` is over; True if the event is to be sent:
      its mark was neither taken nor replaced by a newer hold of the same event (that
      one decides), and the cluster state still says it (the channel empty, the member
      gone, the user signed out) — which also catches an event decided from one node's
      view while Redis was down, or a mark Redis lost. None: not known yet.
    """

    kind: Literal["hold", "take", "release"]
    key: HeldKey
    seconds: float = 0.0
    token: str = ""


class HeldMarks(ABC):
    """Marks of the webhooks nodes hold back, seen by every node: the opposite event
    fired by another node within the delay (a page reload that lands elsewhere) takes
    the mark and both events are dropped, as they would be on one node.

    Operations are applied in the order given, so that a hold and the take that follows
    it on the same node can never pass each other.
    """

    @abstractmethod
    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        """The outcome of each operation (see :class:`MarkOp`); None when the store
        cannot be reached."""


class JobStore(ABC):
    """A durable queue of webhook deliveries shared by the nodes: a job survives a restart,
    and one claimed by a node that dies is handed to another after its lease."""

    @abstractmethod
    async def add(self, queue: str, payload: bytes, limit: int, limit_bytes: int) -> int:
        """Queue a job, due now; the earliest due are dropped while the queue holds more
        than ``limit`` jobs or ``limit_bytes`` bytes of payloads (the newest job stays).
        Return how many events the dropped jobs held (a payload that starts with
        ``{"k":N`` holds N events; any other, one)."""

    @abstractmethod
    async def claim(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        """Take up to ``count`` due jobs for ``lease`` seconds: (job id, payload) pairs."""

    @abstractmethod
    async def done(self, queue: str, job_id: str) -> None:
        """The job is delivered (or given up): forget it."""

    @abstractmethod
    async def retry(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        """Make the job due again after ``delay`` seconds, with an updated payload."""

    @abstractmethod
    async def size(self, queue: str) -> int: ...
