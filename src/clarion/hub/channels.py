"""Channels and their subscribers on this node, the cache of cache channels, and
``publish()``, which encodes a frame once per channel and hands it to the broker.

The hub never imports the server: a subscriber is anything with a socket id and a
transport (see :mod:`clarion.hub.fanout`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from clarion.broker.base import Broker, ChannelCounts
from clarion.config import AppConfig
from clarion.hub.fanout import Subscriber, write_to_all
from clarion.hub.presence import PresenceMembers
from clarion.hub.users import Users
from clarion.protocol import messages, names
from clarion.protocol import webhooks as hooks
from clarion.protocol.api import PublishRequest

CACHE_TTL = 1800.0
# pusher_internal:subscription_count goes out at most once per channel in this many seconds.
SUBSCRIPTION_COUNT_INTERVAL = 5.0


class EventSink(Protocol):
    """Where the hub reports what webhooks are made of (the webhook outbox)."""

    def wants(self, app_id: str, name: str) -> bool: ...

    def emit(self, app_id: str, event: hooks.WebhookEvent) -> None: ...


class NoEvents:
    def wants(self, app_id: str, name: str) -> bool:
        return False

    def emit(self, app_id: str, event: hooks.WebhookEvent) -> None:
        pass


class Channel:
    __slots__ = ("name", "presence", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        # subscriber -> its presence user_id (None outside presence channels)
        self.subscribers: dict[Subscriber, str | None] = {}
        self.presence: PresenceMembers | None = (
            PresenceMembers() if names.channel_kind(name) is names.ChannelKind.PRESENCE else None
        )


@dataclass(slots=True)
class CachedEvent:
    event: str
    data: str
    frame: bytes
    expires_at: float

    def ttl(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: Any


class PresenceFull(Exception):
    """The presence channel already holds the maximum number of distinct members."""


@dataclass(frozen=True, slots=True)
class Joined:
    """What a subscribe changed. ``frames`` go to the subscriber, in order."""

    frames: list[bytes]
    new: bool


class AppChannels:
    """All channels of one app on this node."""

    __slots__ = ("app_id", "cache", "channels", "count_due", "count_sent", "users")

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.channels: dict[str, Channel] = {}
        self.cache: dict[str, CachedEvent] = {}
        self.users = Users()
        # channel -> when its next subscription_count event may go out
        self.count_due: dict[str, float] = {}
        self.count_sent: dict[str, float] = {}

    def cached(self, channel: str, now: float) -> CachedEvent | None:
        entry = self.cache.get(channel)
        if entry is not None and entry.expires_at <= now:
            del self.cache[channel]
            return None
        return entry


class Hub:
    def __init__(
        self,
        broker: Broker,
        write_buffer_limit: int,
        app_config: Callable[[str], AppConfig | None],
        events: EventSink | None = None,
    ) -> None:
        self.broker = broker
        self.events: EventSink = events if events is not None else NoEvents()
        self.write_buffer_limit = write_buffer_limit
        self._app_config = app_config
        self._apps: dict[str, AppChannels] = {}
        broker.bind(self.deliver)

    def presence_limit(self, app_id: str) -> int:
        config = self._app_config(app_id)
        return config.max_presence_members if config is not None else names.MAX_PRESENCE_MEMBERS

    def app(self, app_id: str) -> AppChannels:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = AppChannels(app_id)
        return state

    # --- the data plane ----------------------------------------------------------

    def publish(self, app_id: str, request: PublishRequest) -> None:
        """Encode the event once per channel and hand each frame to the broker."""
        app = self.app(app_id)
        for channel in request.channels:
            frame = messages.event(request.name, channel, request.data)
            if names.is_cache_channel(channel):
                app.cache[channel] = CachedEvent(
                    request.name, request.data, frame, time.monotonic() + CACHE_TTL
                )
            self.broker.publish(app_id, channel, frame, request.socket_id)

    def deliver(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Write a frame from the broker to this node's subscribers of ``channel``."""
        state = self._apps.get(app_id)
        if state is None:
            return
        target = state.channels.get(channel)
        if target is not None:
            write_to_all(target.subscribers, frame, exclude, self.write_buffer_limit)

    # --- subscriptions -------------------------------------------------------------

    def subscribe(self, app_id: str, sub: Subscriber, name: str, member: Member | None) -> Joined:
        """Add ``sub`` to channel ``name`` and say what to send it.

        A duplicate subscribe changes nothing and answers subscription_succeeded again.
        Raises PresenceFull when a new user would exceed the presence member limit.
        """
        app = self.app(app_id)
        channel = app.channels.get(name)
        if channel is None:
            channel = app.channels[name] = Channel(name)
        new = sub not in channel.subscribers
        presence = channel.presence
        if (
            new
            and presence is not None
            and member is not None
            and member.user_id not in presence
            and len(presence) >= self.presence_limit(app_id)
        ):
            if not channel.subscribers:
                del app.channels[name]
            raise PresenceFull(name)
        events = self.events
        if new and not channel.subscribers and not name.startswith(names.SERVER_TO_USER_PREFIX):
            events.emit(app_id, hooks.channel_event("channel_occupied", name))
        if presence is not None and member is not None and new:
            channel.subscribers[sub] = member.user_id
            if presence.add(member.user_id, member.user_info):
                events.emit(app_id, hooks.member_event("member_added", name, member.user_id))
                added = messages.event(
                    "pusher_internal:member_added",
                    name,
                    messages.json_string(
                        {"user_id": member.user_id, "user_info": member.user_info}
                    ),
                )
                self.broker.publish(app_id, name, added, sub.socket_id)
        elif new:
            channel.subscribers[sub] = None
        if new:
            self._count_changed(app, name)
        frames = [
            messages.subscription_succeeded(
                name, presence.subscription_data() if presence is not None else "{}"
            )
        ]
        if names.is_cache_channel(name):
            cached = app.cached(name, time.monotonic())
            if cached is not None:
                frames.append(cached.frame)
            else:
                frames.append(messages.cache_miss(name))
                events.emit(app_id, hooks.channel_event("cache_miss", name))
        return Joined(frames, new)

    def unsubscribe(self, app_id: str, sub: Subscriber, name: str) -> bool:
        """Remove ``sub`` from channel ``name``; False when it was not subscribed."""
        app = self._apps.get(app_id)
        channel = app.channels.get(name) if app is not None else None
        if app is None or channel is None or sub not in channel.subscribers:
            return False
        user_id = channel.subscribers.pop(sub)
        if (
            channel.presence is not None
            and user_id is not None
            and channel.presence.remove(user_id)
        ):
            removed = messages.event(
                "pusher_internal:member_removed", name, messages.json_string({"user_id": user_id})
            )
            self.broker.publish(app_id, name, removed, None)
            self.events.emit(app_id, hooks.member_event("member_removed", name, user_id))
        if not channel.subscribers:
            del app.channels[name]
            if not name.startswith(names.SERVER_TO_USER_PREFIX):
                self.events.emit(app_id, hooks.channel_event("channel_vacated", name))
        self._count_changed(app, name)
        return True

    def presence_user_of(self, app_id: str, sub: Subscriber, channel: str) -> str | None:
        app = self._apps.get(app_id)
        target = app.channels.get(channel) if app is not None else None
        return target.subscribers.get(sub) if target is not None else None

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
        self.broker.publish(app_id, channel, frame, sender.socket_id)
        if self.events.wants(app_id, "client_event"):
            self.events.emit(
                app_id, hooks.client_event(channel, event, data, sender.socket_id, user_id)
            )

    # --- subscription_count events (opt-in per app) ---------------------------------

    def _count_changed(self, app: AppChannels, name: str) -> None:
        if name in app.count_due or names.channel_kind(name) in (
            names.ChannelKind.PRESENCE,
            names.ChannelKind.SERVER_TO_USER,
        ):
            return
        config = self._app_config(app.app_id)
        if config is None or not config.subscription_count_events:
            return
        last = app.count_sent.get(name)
        now = time.monotonic()
        app.count_due[name] = now if last is None else max(now, last + SUBSCRIPTION_COUNT_INTERVAL)

    def flush_subscription_counts(self, now: float) -> None:
        """Send the subscription counts that are due (called by the server's sweep)."""
        for app in self._apps.values():
            if app.count_sent:
                for name in [
                    n for n, t in app.count_sent.items() if t + SUBSCRIPTION_COUNT_INTERVAL < now
                ]:
                    del app.count_sent[name]
            if not app.count_due:
                continue
            due = [name for name, when in app.count_due.items() if when <= now]
            for name in due:
                del app.count_due[name]
                channel = app.channels.get(name)
                if channel is None:
                    continue  # vacated: nobody left to tell
                app.count_sent[name] = now
                count = len(channel.subscribers)
                frame = messages.subscription_count(name, count)
                self.broker.publish(app.app_id, name, frame, None)
                self.events.emit(app.app_id, hooks.subscription_count(name, count))

    # --- signed-in users ----------------------------------------------------------------

    def sign_in(
        self, app_id: str, sub: Subscriber, user_id: str, watchlist: list[str]
    ) -> bytes | None:
        """Record a signed-in socket; return the watchlist frame due to it, if any."""
        frame, online = self.app(app_id).users.sign_in(
            sub, user_id, watchlist, self.write_buffer_limit
        )
        if online:
            self.events.emit(app_id, hooks.user_event("user_online", user_id))
        return frame

    def sign_out(self, app_id: str, sub: Subscriber, user_id: str) -> None:
        if self.app(app_id).users.sign_out(sub, user_id, self.write_buffer_limit):
            self.events.emit(app_id, hooks.user_event("user_offline", user_id))

    def terminate_user(self, app_id: str, user_id: str) -> int:
        """Close every socket signed in as ``user_id`` with 4009; return how many."""
        app = self._apps.get(app_id)
        if app is None:
            return 0
        sockets = app.users.sockets(user_id)
        for sub in sockets:
            sub.disconnect(4009, "You got disconnected by the app.")
        return len(sockets)

    # --- what the memory state store reads ------------------------------------------

    def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        app = self._apps.get(app_id)
        target = app.channels.get(channel) if app is not None else None
        if target is None:
            return ChannelCounts(0, 0)
        users = len(target.presence) if target.presence is not None else 0
        return ChannelCounts(len(target.subscribers), users)

    def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        app = self._apps.get(app_id)
        if app is None:
            return {}
        return {
            name: ChannelCounts(
                len(channel.subscribers),
                len(channel.presence) if channel.presence is not None else 0,
            )
            for name, channel in app.channels.items()
            if channel.subscribers
            and name.startswith(prefix)
            and not name.startswith(names.SERVER_TO_USER_PREFIX)
        }

    def presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        app = self._apps.get(app_id)
        target = app.channels.get(channel) if app is not None else None
        if target is None or target.presence is None:
            return []
        return target.presence.user_ids()

    def cached_event(self, app_id: str, channel: str) -> CachedEvent | None:
        app = self._apps.get(app_id)
        return app.cached(channel, time.monotonic()) if app is not None else None
