"""This node's channels and their local subscribers, and the one place that publishes.

The hub keeps, per app, which local sockets are subscribed to which channel (what
fan-out needs) and asks the :class:`~clarion.broker.base.ChannelState` what a join or a
leave means for the whole cluster (occupied? vacated? a user's first or last socket?).
It then tells the broker what every node's subscribers must see and the event sink what
webhooks are due. ``publish()`` encodes a frame once per channel and hands it to the
broker.

The hub never imports the server: a subscriber is anything with a socket id and a
transport (see :mod:`clarion.hub.fanout`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from clarion import metrics
from clarion.broker.base import Broker, BrokerUnavailable, ChannelState, Member, PresenceFull
from clarion.config import AppConfig
from clarion.hub.fanout import Subscriber, Writer, write_to_all
from clarion.hub.users import Users
from clarion.protocol import messages, names
from clarion.protocol import webhooks as hooks
from clarion.protocol.api import PublishRequest
from clarion.protocol.errors import CloseCode

__all__ = ["Hub", "Member", "PresenceFull", "Subscribed"]

CACHE_TTL = 1800
# pusher_internal:subscription_count goes out at most once per channel in this many seconds.
SUBSCRIPTION_COUNT_INTERVAL = 5.0
# Internal broker channels (a real channel name never starts with "#" and a colon).
WATCH_PREFIX = "#watch:"
TERMINATE_PREFIX = "#terminate:"
TERMINATE = b""


class EventSink(Protocol):
    """Where the hub reports what webhooks are made of (the webhook outbox)."""

    def wants(self, app_id: str, name: str) -> bool: ...

    def emit(self, app_id: str, event: hooks.WebhookEvent) -> None: ...


class NoEvents:
    def wants(self, app_id: str, name: str) -> bool:
        return False

    def emit(self, app_id: str, event: hooks.WebhookEvent) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The frames a subscribe answers with, in order; ``new`` if it was not a duplicate."""

    frames: list[bytes]
    new: bool


class AppChannels:
    """One app's local subscribers on this node."""

    __slots__ = (
        "app_id",
        "bytes_sent",
        "channels",
        "count_due",
        "count_sent",
        "members",
        "sent",
        "users",
    )

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        # Metric children resolved once: fan-out pays an increment per frame, not a lookup.
        self.sent = metrics.messages_sent.labels(app_id)
        self.bytes_sent = metrics.bytes_sent.labels(app_id)
        # channel -> local subscriber -> its transport's write (what fan-out calls)
        self.channels: dict[str, dict[Subscriber, Writer]] = {}
        # presence channel -> local subscriber -> its user_id
        self.members: dict[str, dict[Subscriber, str]] = {}
        self.users = Users()
        # channel -> when its next subscription_count event may go out
        self.count_due: dict[str, float] = {}
        self.count_sent: dict[str, float] = {}


class Hub:
    def __init__(
        self,
        broker: Broker,
        state: ChannelState,
        app_config: Callable[[str], AppConfig | None],
        events: EventSink | None = None,
    ) -> None:
        self.broker = broker
        self.state = state
        self._app_config = app_config
        self.events: EventSink = events if events is not None else NoEvents()
        self._apps: dict[str, AppChannels] = {}
        broker.bind(self.deliver)

    def app(self, app_id: str) -> AppChannels:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = AppChannels(app_id)
        return state

    def sizes(self) -> dict[str, dict[str, int]]:
        """Channels and subscriptions per app on this node (read by the metrics scrape)."""
        channels = {app_id: len(app.channels) for app_id, app in self._apps.items()}
        subscriptions = {
            app_id: sum(map(len, app.channels.values())) for app_id, app in self._apps.items()
        }
        return {"channels": channels, "subscriptions": subscriptions}

    def presence_limit(self, app_id: str) -> int:
        config = self._app_config(app_id)
        return config.max_presence_members if config is not None else names.MAX_PRESENCE_MEMBERS

    # --- the data plane ----------------------------------------------------------

    async def publish(self, app_id: str, request: PublishRequest) -> None:
        """Encode the event once per channel and hand each frame to the broker.

        With the cluster link down every channel is still delivered locally (and cached);
        BrokerUnavailable is raised once, at the end, for the caller to report.
        """
        unavailable: BrokerUnavailable | None = None
        for channel in request.channels:
            frame = messages.event(request.name, channel, request.data)
            try:
                self.broker.publish(app_id, channel, frame, request.socket_id)
            except BrokerUnavailable as exc:
                unavailable = exc
            if names.is_cache_channel(channel):
                await self.state.cache_put(app_id, channel, request.name, request.data, CACHE_TTL)
        if unavailable is not None:
            raise unavailable

    def deliver(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Write a frame from the broker to this node's subscribers of ``channel``."""
        app = self._apps.get(app_id)
        if app is None:
            return
        subscribers = app.channels.get(channel)
        if subscribers is not None:
            count = write_to_all(subscribers, frame, exclude)
            app.sent.inc(count)
            app.bytes_sent.inc(count * len(frame))
            metrics.fanout_size.observe(count)
        elif channel.startswith("#") and ":" in channel:
            self._deliver_internal(app, channel, frame)

    def _deliver_internal(self, app: AppChannels, channel: str, frame: bytes) -> None:
        if channel.startswith(WATCH_PREFIX):
            for watcher in app.users.watchers(channel[len(WATCH_PREFIX) :]):
                watcher.transport.write(frame)
        elif channel.startswith(TERMINATE_PREFIX) and frame == TERMINATE:
            for sub in app.users.sockets(channel[len(TERMINATE_PREFIX) :]):
                sub.disconnect(CloseCode.UNAUTHORIZED, "You got disconnected by the app.")

    # --- subscriptions -------------------------------------------------------------

    async def subscribe(
        self, app_id: str, sub: Subscriber, name: str, member: Member | None
    ) -> Subscribed:
        """Add ``sub`` to channel ``name`` and say what to send it.

        A duplicate subscribe changes nothing and answers subscription_succeeded again.
        Raises PresenceFull when a new user would exceed the app's presence member limit.
        """
        app = self.app(app_id)
        local = app.channels.get(name)
        presence = names.channel_kind(name) is names.ChannelKind.PRESENCE
        if local is not None and sub in local:
            members = await self.state.presence_members(app_id, name) if presence else None
            return Subscribed(await self._welcome(app_id, name, members), new=False)

        joined = await self.state.join(
            app_id, name, sub.socket_id, member if presence else None, self.presence_limit(app_id)
        )
        local = app.channels.get(name)  # may have changed while waiting on the state
        if local is None:
            # The subscriber is in the table before the broker is asked to listen, so a
            # socket that joins or leaves meanwhile sees a table that is not empty.
            local = app.channels[name] = {sub: sub.transport.write}
            if self.broker.needs_watch:
                await self.broker.watch(app_id, name)
        else:
            local[sub] = sub.transport.write
        if presence and member is not None:
            app.members.setdefault(name, {})[sub] = member.user_id

        events = self.events
        if joined.occupied and not name.startswith(names.SERVER_TO_USER_PREFIX):
            events.emit(app_id, hooks.channel_event("channel_occupied", name))
        if joined.member_added and member is not None:
            events.emit(app_id, hooks.member_event("member_added", name, member.user_id))
            info = {"user_id": member.user_id, "user_info": member.user_info}
            added = messages.event("pusher_internal:member_added", name, messages.json_string(info))
            self._broadcast(app_id, name, added, sub.socket_id)
        self._count_changed(app, name)
        if joined.members is None and not names.is_cache_channel(name):
            return Subscribed([messages.subscription_succeeded(name)], new=True)
        return Subscribed(await self._welcome(app_id, name, joined.members), new=True)

    async def _welcome(self, app_id: str, name: str, members: dict[str, Any] | None) -> list[bytes]:
        data = messages.presence_data(members) if members is not None else "{}"
        frames = [messages.subscription_succeeded(name, data)]
        if names.is_cache_channel(name):
            cached = await self.state.cache_get(app_id, name)
            if cached is not None:
                frames.append(messages.event(cached.event, name, cached.data))
            else:
                frames.append(messages.cache_miss(name))
                self.events.emit(app_id, hooks.channel_event("cache_miss", name))
        return frames

    async def unsubscribe(self, app_id: str, sub: Subscriber, name: str) -> bool:
        """Remove ``sub`` from channel ``name``; False when it was not subscribed."""
        app = self._apps.get(app_id)
        local = app.channels.get(name) if app is not None else None
        if app is None or local is None or sub not in local:
            return False
        # Stop local deliveries at once; the cluster-wide bookkeeping follows.
        del local[sub]
        if not local:
            del app.channels[name]
            self.broker.unwatch(app_id, name)
        user_id = None
        members = app.members.get(name)
        if members is not None:
            user_id = members.pop(sub, None)
            if not members:
                del app.members[name]
        left = await self.state.leave(app_id, name, sub.socket_id, user_id)
        if left.member_removed and user_id is not None:
            self._member_removed(app_id, name, user_id)
        if left.vacated and not name.startswith(names.SERVER_TO_USER_PREFIX):
            self.events.emit(app_id, hooks.channel_event("channel_vacated", name))
        self._count_changed(app, name)
        return True

    def _member_removed(self, app_id: str, name: str, user_id: str) -> None:
        removed = messages.event(
            "pusher_internal:member_removed", name, messages.json_string({"user_id": user_id})
        )
        self._broadcast(app_id, name, removed, None)
        self.events.emit(app_id, hooks.member_event("member_removed", name, user_id))

    def _broadcast(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Publish a frame the hub itself produced; local delivery happens even with the
        cluster link down (the link reports the outage itself)."""
        with contextlib.suppress(BrokerUnavailable):
            self.broker.publish(app_id, channel, frame, exclude)

    async def reaped(self, items: list[tuple[str, ...]]) -> None:
        """A dead node's sockets were removed from the cluster state: tell what it means."""
        for item in items:
            kind, app_id = item[0], item[1]
            if kind == "r":
                self._member_removed(app_id, item[2], item[3])
            elif kind == "v" and not item[2].startswith(names.SERVER_TO_USER_PREFIX):
                self.events.emit(app_id, hooks.channel_event("channel_vacated", item[2]))
            elif kind == "o":
                self._user_offline(app_id, item[2])

    def _user_offline(self, app_id: str, user_id: str) -> None:
        self.events.emit(app_id, hooks.user_event("user_offline", user_id))
        frame = messages.watchlist_events([("offline", [user_id])])
        self._broadcast(app_id, WATCH_PREFIX + user_id, frame, None)

    def presence_user_of(self, app_id: str, sub: Subscriber, channel: str) -> str | None:
        app = self._apps.get(app_id)
        members = app.members.get(channel) if app is not None else None
        return members.get(sub) if members is not None else None

    def client_event(
        self,
        app_id: str,
        sender: Subscriber,
        channel: str,
        frame: bytes,
        event: str,
        data: Any,
        user_id: str | None,
    ) -> None:
        """Forward a client event to the channel's other subscribers (never to the sender)."""
        self._broadcast(app_id, channel, frame, sender.socket_id)
        if self.events.wants(app_id, "client_event"):
            self.events.emit(
                app_id, hooks.client_event(channel, event, data, sender.socket_id, user_id)
            )

    # --- subscription_count events (opt-in per app) ---------------------------------

    def _count_changed(self, app: AppChannels, name: str) -> None:
        config = self._app_config(app.app_id)
        if config is None or not config.subscription_count_events or name in app.count_due:
            return
        if names.channel_kind(name) in (
            names.ChannelKind.PRESENCE,
            names.ChannelKind.SERVER_TO_USER,
        ):
            return
        last = app.count_sent.get(name)
        now = time.monotonic()
        app.count_due[name] = now if last is None else max(now, last + SUBSCRIPTION_COUNT_INTERVAL)

    async def flush_subscription_counts(self, now: float) -> None:
        """Send the subscription counts that are due (called by the server's sweep).

        The node where the count changed sends the cluster-wide count to every node's
        subscribers, and fires the webhook; a turn taken in the cluster state keeps that
        to one node per interval.
        """
        for app in list(self._apps.values()):
            for name in [
                n for n, t in app.count_sent.items() if t + SUBSCRIPTION_COUNT_INTERVAL < now
            ]:
                del app.count_sent[name]
            due = [name for name, when in app.count_due.items() if when <= now]
            for name in due:
                del app.count_due[name]
                wait = await self.state.claim_count_turn(
                    app.app_id, name, SUBSCRIPTION_COUNT_INTERVAL
                )
                if wait > 0:  # another node sent it lately: the count goes when its turn ends
                    app.count_due[name] = now + wait
                    continue
                app.count_sent[name] = now
                counts = await self.state.channel_counts(app.app_id, name)
                count = counts.subscription_count
                if count:
                    frame = messages.subscription_count(name, count)
                    self._broadcast(app.app_id, name, frame, None)
                self.events.emit(app.app_id, hooks.subscription_count(name, count))

    # --- signed-in users ----------------------------------------------------------------

    async def sign_in(
        self, app_id: str, sub: Subscriber, user_id: str, watchlist: list[str]
    ) -> bytes | None:
        """Record a signed-in socket; return the watchlist frame due to it, if any."""
        app = self.app(app_id)
        if app.users.add(sub, user_id):
            await self.broker.watch(app_id, TERMINATE_PREFIX + user_id)
        for watched in app.users.watch(sub, watchlist):
            await self.broker.watch(app_id, WATCH_PREFIX + watched)
        if await self.state.sign_in(app_id, user_id, sub.socket_id):
            self.events.emit(app_id, hooks.user_event("user_online", user_id))
            frame = messages.watchlist_events([("online", [user_id])])
            self._broadcast(app_id, WATCH_PREFIX + user_id, frame, None)
        if not watchlist:
            return None
        online = await self.state.online(app_id, watchlist)
        return messages.watchlist_events(
            [
                ("online", [u for u in watchlist if u in online]),
                ("offline", [u for u in watchlist if u not in online]),
            ]
        )

    async def sign_out(self, app_id: str, sub: Subscriber, user_id: str) -> None:
        app = self.app(app_id)
        for watched in app.users.unwatch(sub):
            self.broker.unwatch(app_id, WATCH_PREFIX + watched)
        if app.users.remove(sub, user_id):
            self.broker.unwatch(app_id, TERMINATE_PREFIX + user_id)
        if await self.state.sign_out(app_id, user_id, sub.socket_id):
            self._user_offline(app_id, user_id)

    def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every socket signed in as ``user_id``, on every node, with 4009."""
        self.broker.publish(app_id, TERMINATE_PREFIX + user_id, TERMINATE, None)
