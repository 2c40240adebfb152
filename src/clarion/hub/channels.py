"""This node's channels and their local subscribers, and the one place that publishes.

The hub keeps, per app, which local sockets are subscribed to which channel (what
fan-out needs) and asks the :class:`~clarion.cluster.interfaces.ChannelState` what a join or a
leave means for the whole cluster (occupied? vacated? a user's first or last socket?).
It then tells the broker what every node's subscribers must see and the event sink what
webhooks are due. ``publish()`` encodes a frame once per channel and hands it to the
broker.

The hub never imports the server: a subscriber is anything with a socket id and a
transport (see :mod:`clarion.hub.fanout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from clarion import metrics
from clarion.admin import taps as tap
from clarion.cluster.interfaces import (
    Broker,
    BrokerUnavailable,
    ChannelState,
    ChannelVacated,
    Member,
    MemberRemoved,
    PresenceFull,
    Reaped,
)
from clarion.config import AppConfig
from clarion.hub.fanout import Outbox, Subscriber, Writer
from clarion.hub.presence import JoinBuffer, unversioned, versioned
from clarion.hub.users import Users
from clarion.protocol import messages, names
from clarion.protocol import webhooks as hooks
from clarion.protocol.api import PublishRequest
from clarion.protocol.errors import CloseCode

__all__ = ["Hub", "Member", "PresenceFull", "Subscribed"]

log = logging.getLogger("clarion.hub")

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


def _run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that completes without waiting (the in-memory state's)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a cleanup had to wait, with no event loop to wait in")


class AppChannels:
    """One app's local subscribers on this node."""

    __slots__ = (
        "app_id",
        "bytes_sent",
        "channels",
        "count_due",
        "count_sent",
        "joining",
        "listed",
        "listening",
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
        # presence channel -> local subscriber -> the version its member list was read at
        self.listed: dict[str, dict[Subscriber, int]] = {}
        # channel -> sockets whose subscribe is under way -> the frames held for them
        self.joining: dict[str, dict[Subscriber, JoinBuffer]] = {}
        # channel -> the broker's watch, while this node's first interest awaits it
        self.listening: dict[str, asyncio.Future[None]] = {}
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
        # The admin console's live log: empty (one dict check per call site) while no
        # console watches.
        self.taps = tap.Taps()
        self._apps: dict[str, AppChannels] = {}
        # Every frame to a subscriber goes through the outbox: a fan-out's are written at
        # the end of the loop's turn, one write per connection (clarion.hub.fanout).
        self.outbox = Outbox(self._write_failed)
        # The removals scheduled for subscribers whose transport raised in a fan-out.
        self._evicting: set[tuple[str, str, Subscriber]] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
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

    def member_hold(self, app_id: str) -> float:
        """Seconds a member's leave is held back for the app's member webhooks (0: the
        app wants neither member_added nor member_removed)."""
        config = self._app_config(app_id)
        if config is None or not config.webhooks:
            return 0.0
        events = self.events
        if events.wants(app_id, "member_removed") or events.wants(app_id, "member_added"):
            return config.webhook_delay
        return 0.0

    def presence_limit(self, app_id: str) -> int:
        config = self._app_config(app_id)
        return config.max_presence_members if config is not None else names.MAX_PRESENCE_MEMBERS

    # --- the data plane ----------------------------------------------------------

    async def publish(self, app_id: str, request: PublishRequest) -> None:
        """Encode the event once per channel and hand each frame to the broker.

        Returns once every frame reached every node, as far as the broker can tell: a
        clustered broker confirms that the other nodes' share was taken (the HTTP API
        answers 200 only then). With the cluster link down, or no confirmation within
        the broker's timeout, every channel is still delivered locally (and cached) and
        BrokerUnavailable is raised once, at the end, for the caller to report (503).
        The in-memory broker has nothing to confirm: this then never suspends.
        """
        unavailable: BrokerUnavailable | None = None
        confirmations: list[Awaitable[None]] | None = None
        if app_id in self.taps.apps:
            for channel in request.channels:
                self.taps.emit(
                    app_id, tap.API_MESSAGE, request.socket_id, channel, request.name, request.data
                )
        for channel in request.channels:
            frame = messages.event(request.name, channel, request.data)
            try:
                confirmation = self.broker.publish(
                    app_id, channel, frame, request.socket_id, confirm=True
                )
            except BrokerUnavailable as exc:
                unavailable = exc
            else:
                if confirmation is not None:
                    if confirmations is None:
                        confirmations = [confirmation]
                    else:
                        confirmations.append(confirmation)
            if names.is_cache_channel(channel):
                await self.state.cache_put(app_id, channel, request.name, request.data, CACHE_TTL)
        if confirmations is not None:
            for confirmation in confirmations:  # each awaited: none is left unretrieved
                try:
                    await confirmation
                except BrokerUnavailable as exc:
                    unavailable = exc
        if unavailable is not None:
            raise unavailable

    def deliver(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Write a frame from the broker to this node's subscribers of ``channel``.

        A presence member event carries the version of its change: a subscriber whose
        member list was read at that version or later has it in its list already, and
        does not get it again (the join's reply and the event race through pub/sub).
        """
        app = self._apps.get(app_id)
        if app is None:
            return
        frame, version = unversioned(frame)
        joining = app.joining.get(channel)
        if joining is not None:
            for sub, buffer in joining.items():
                if sub.socket_id != exclude:
                    buffer.add(frame, version)
        subscribers = app.channels.get(channel)
        if subscribers is not None:
            if version is not None and channel in app.listed:
                listed = app.listed[channel]
                subscribers = {s: w for s, w in subscribers.items() if listed.get(s, 0) < version}
            count = self.outbox.write_to_all(subscribers, frame, exclude)
            app.sent.inc(count)
            app.bytes_sent.inc(count * len(frame))
            metrics.fanout_size.observe(count)
        elif channel.startswith("#") and ":" in channel:
            self._deliver_internal(app, channel, frame)

    def _write_failed(self, sub: Subscriber) -> None:
        """A write of the outbox to ``sub`` raised: remove it from this node's channels.

        Mostly a socket already gone whose leave has not reached every channel yet (the
        removal then completes it, or finds it done); a transport that raised while open
        is closed, as it can no longer be written to. Rare, so the channels are looked
        up here rather than remembered with every queued frame.
        """
        keys = [
            (app_id, channel, sub)
            for app_id, app in self._apps.items()
            for channel, subscribers in app.channels.items()
            if sub in subscribers and (app_id, channel, sub) not in self._evicting
        ]
        if not keys:
            return
        try:
            closing = sub.transport.is_closing()
        except Exception:
            closing = True
        if closing:
            log.debug("socket %s skipped: its transport is gone", sub.socket_id)
        else:
            log.warning("a write to socket %s failed: closing it", sub.socket_id)
            with contextlib.suppress(Exception):
                sub.disconnect(4200, "Server could not write to the connection")
        for key in keys:
            self._evict(key)

    def _evict(self, key: tuple[str, str, Subscriber]) -> None:
        """Remove a subscriber from a channel, in a task of its own: it must not change
        the table a fan-out iterates, and a clustered state's calls need a task of their
        own (their timeouts attach to the current one)."""
        self._evicting.add(key)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the hub driven by hand, outside a loop: nothing waits
            _run_now(self._evicted(key))
            return
        task = loop.create_task(self._evicted(key))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _evicted(self, key: tuple[str, str, Subscriber]) -> None:
        try:
            app_id, channel, sub = key
            await self.unsubscribe(app_id, sub, channel)
        finally:
            self._evicting.discard(key)

    async def settle(self) -> None:
        """Wait (a bounded time) for the removals scheduled by fan-out: a shutdown calls
        this before it flushes the webhooks their leaves cause. The frames the outbox
        holds are written first (a failed write schedules such a removal)."""
        self.outbox.flush()
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=5.0)

    def _deliver_internal(self, app: AppChannels, channel: str, frame: bytes) -> None:
        if channel.startswith(WATCH_PREFIX):
            for watcher in app.users.watchers(channel[len(WATCH_PREFIX) :]):
                # A watcher already gone misses nothing; the others must not miss it.
                with contextlib.suppress(Exception):
                    self.outbox.send(watcher, frame)
        elif channel.startswith(TERMINATE_PREFIX) and frame == TERMINATE:
            for sub in app.users.sockets(channel[len(TERMINATE_PREFIX) :]):
                try:
                    sub.disconnect(CloseCode.UNAUTHORIZED, "You got disconnected by the app.")
                except Exception:
                    log.exception("terminating socket %s failed", sub.socket_id)

    # --- subscriptions -------------------------------------------------------------

    async def subscribe(
        self, app_id: str, sub: Subscriber, name: str, member: Member | None
    ) -> Subscribed:
        """Add ``sub`` to channel ``name`` and say what to send it.

        A duplicate subscribe changes nothing and answers subscription_succeeded again.
        Raises PresenceFull when a new user would exceed the app's presence member limit.
        """
        app = self._apps.get(app_id) or self.app(app_id)  # (a call only for a new app)
        local = app.channels.get(name)
        presence = names.channel_kind(name) is names.ChannelKind.PRESENCE
        if local is not None and sub in local:
            members = await self.state.presence_members(app_id, name) if presence else None
            return Subscribed(await self._welcome(app_id, name, members), new=False)

        joining = app.joining.get(name)
        if joining is None:
            joining = app.joining[name] = {}
        joining[sub] = buffer = JoinBuffer()
        try:
            # Listen before the join is counted: a member event caused by any later
            # change then reaches this node, and is held for this socket until its
            # member list is out (a version tells which the list accounts for).
            if self.broker.needs_watch:  # (a single node's broker needs none)
                await self._listen(app, name, first=local is None and len(joining) == 1)
            joined = await self.state.join(
                app_id,
                name,
                sub.socket_id,
                member if presence else None,
                # The limit counts users: it is read only for a presence channel's member.
                self.presence_limit(app_id) if presence else names.MAX_PRESENCE_MEMBERS,
            )
        except BaseException:
            self._joined(app, name, sub)
            if name not in app.channels and name not in app.joining:
                self.broker.unwatch(app_id, name)
            raise
        try:
            if presence and member is not None:
                app.members.setdefault(name, {})[sub] = member.user_id
            events = self.events
            taps = self.taps
            watched = app_id in taps.apps
            if watched:
                taps.emit(app_id, tap.SUBSCRIBED, sub.socket_id, name)
            if joined.occupied and not name.startswith(names.SERVER_TO_USER_PREFIX):
                events.emit(app_id, hooks.channel_event("channel_occupied", name))
                if watched:
                    taps.emit(app_id, tap.OCCUPIED, sub.socket_id, name)
            if joined.member_added and member is not None:
                if not joined.returned:
                    # A return within the hold-back (seen by the cluster state, whichever
                    # node the user left from) gives neither webhook: the held
                    # member_removed finds the user present when its delay ends.
                    events.emit(app_id, hooks.member_event("member_added", name, member.user_id))
                if watched:
                    taps.emit(
                        app_id,
                        tap.MEMBER_ADDED,
                        sub.socket_id,
                        name,
                        None,
                        {"user_id": member.user_id, "user_info": member.user_info},
                    )
                info = {"user_id": member.user_id, "user_info": member.user_info}
                added = messages.event(
                    "pusher_internal:member_added", name, messages.json_string(info)
                )
                self._broadcast(app_id, name, versioned(added, joined.version), sub.socket_id)
            self._count_changed(app, name)
            if joined.members is None and not names.is_cache_channel(name):
                frames = [messages.subscription_succeeded(name)]
            else:
                frames = await self._welcome(app_id, name, joined.members)
        finally:
            # Live from here: what was held follows the welcome, with no await between.
            self._joined(app, name, sub, sub.transport.write)
            if presence and joined.version is not None:
                app.listed.setdefault(name, {})[sub] = joined.version
        if buffer.overflowed:
            sub.disconnect(4100, "Too many messages for the channel while subscribing")
            return Subscribed(frames, new=True)
        if buffer.frames:
            frames += buffer.after(joined.version)
        return Subscribed(frames, new=True)

    async def _listen(self, app: AppChannels, name: str, first: bool) -> None:
        """Return once frames of ``name`` published on other nodes reach this one."""
        if not self.broker.needs_watch:
            return
        if first:
            watch = app.listening[name] = asyncio.ensure_future(self.broker.watch(app.app_id, name))
            try:
                await watch
            finally:
                if app.listening.get(name) is watch:
                    del app.listening[name]
        elif (pending := app.listening.get(name)) is not None:
            # Another socket's watch, still on its way: wait for it, whatever becomes of
            # it (that socket's subscribe may be cancelled; this one goes on).
            await asyncio.wait([pending])

    def _joined(
        self, app: AppChannels, name: str, sub: Subscriber, write: Writer | None = None
    ) -> None:
        """``sub``'s subscribe is over: live in the channel with ``write``, or gone."""
        joining = app.joining.get(name)
        if joining is not None:
            joining.pop(sub, None)
            if not joining:
                del app.joining[name]
        if write is not None:
            app.channels.setdefault(name, {})[sub] = write

    def _forget_member(self, app: AppChannels, name: str, sub: Subscriber) -> str | None:
        """Drop ``sub``'s presence records in ``name``; its user_id, if it had one."""
        listed = app.listed.get(name)
        if listed is not None:
            listed.pop(sub, None)
            if not listed:
                del app.listed[name]
        members = app.members.get(name)
        if members is None:
            return None
        user_id = members.pop(sub, None)
        if not members:
            del app.members[name]
        return user_id

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
        """Remove ``sub`` from channel ``name``; False when it was not subscribed.

        Never raises for a step that failed (it is logged): the leave always completes,
        or the socket would stay counted for good, a phantom subscriber or member on
        every node, and the caller's other channels would not be left either. Whoever
        removes the subscriber from the local table does the cluster-wide leave, once.
        """
        app = self._apps.get(app_id)
        local = app.channels.get(name) if app is not None else None
        if app is None or local is None or sub not in local:
            return False
        # Stop local deliveries at once; the cluster-wide bookkeeping follows.
        del local[sub]
        try:
            if not local:
                del app.channels[name]
                if name not in app.joining:  # a subscribe under way still listens
                    self.broker.unwatch(app_id, name)
        except Exception:
            log.exception("unwatching %s failed", name)
        user_id = self._forget_member(app, name, sub)
        try:
            hold = self.member_hold(app_id) if user_id is not None else 0.0
            left = await self.state.leave(app_id, name, sub.socket_id, user_id, hold)
        except Exception:
            log.exception("leaving %s in the cluster state failed", name)
            return True
        try:
            if app_id in self.taps.apps:
                self.taps.emit(app_id, tap.UNSUBSCRIBED, sub.socket_id, name)
            if left.member_removed and user_id is not None:
                self._member_removed(app_id, name, user_id, left.version)
            if left.vacated and not name.startswith(names.SERVER_TO_USER_PREFIX):
                self.events.emit(app_id, hooks.channel_event("channel_vacated", name))
                if app_id in self.taps.apps:
                    self.taps.emit(app_id, tap.VACATED, sub.socket_id, name)
            self._count_changed(app, name)
        except Exception:
            log.exception("announcing the leave of %s failed", name)
        return True

    def _member_removed(
        self, app_id: str, name: str, user_id: str, version: int | None = None
    ) -> None:
        removed = messages.event(
            "pusher_internal:member_removed", name, messages.json_string({"user_id": user_id})
        )
        self._broadcast(app_id, name, versioned(removed, version), None)
        self.events.emit(app_id, hooks.member_event("member_removed", name, user_id))
        if app_id in self.taps.apps:
            self.taps.emit(app_id, tap.MEMBER_REMOVED, None, name, None, {"user_id": user_id})

    def _broadcast(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        """Publish a frame the hub itself produced; local delivery happens even with the
        cluster link down (the link reports the outage itself)."""
        with contextlib.suppress(BrokerUnavailable):
            self.broker.publish(app_id, channel, frame, exclude)

    async def reaped(self, items: list[Reaped]) -> None:
        """A dead node's sockets were removed from the cluster state: tell what it means.

        Each item on its own: one that fails (logged) does not cost the others their
        frames and webhooks (this runs in the shutdown, before the webhook flush)."""
        for item in items:
            try:
                if isinstance(item, MemberRemoved):
                    self._member_removed(item.app_id, item.channel, item.user_id, item.version)
                elif isinstance(item, ChannelVacated):
                    if not item.channel.startswith(names.SERVER_TO_USER_PREFIX):
                        vacated = hooks.channel_event("channel_vacated", item.channel)
                        self.events.emit(item.app_id, vacated)
                else:
                    self._user_offline(item.app_id, item.user_id)
            except Exception:
                log.exception("announcing %r failed", item)

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
        if app_id in self.taps.apps:
            self.taps.emit(app_id, tap.CLIENT_EVENT, sender.socket_id, channel, event, data)
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
        if app_id in self.taps.apps:
            self.taps.emit(app_id, tap.SIGN_IN, sub.socket_id, None, None, {"user_id": user_id})
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
        """Forget a signed-in socket; the cluster-wide sign-out runs whatever failed
        locally (logged, never raised: see :meth:`unsubscribe`)."""
        app = self.app(app_id)
        try:
            for watched in app.users.unwatch(sub):
                self.broker.unwatch(app_id, WATCH_PREFIX + watched)
            if app.users.remove(sub, user_id):
                self.broker.unwatch(app_id, TERMINATE_PREFIX + user_id)
        except Exception:
            log.exception("forgetting the sign-in of socket %s failed", sub.socket_id)
        try:
            if await self.state.sign_out(app_id, user_id, sub.socket_id):
                self._user_offline(app_id, user_id)
        except Exception:
            log.exception("signing out socket %s in the cluster state failed", sub.socket_id)

    def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every socket signed in as ``user_id``, on every node, with 4009."""
        self.broker.publish(app_id, TERMINATE_PREFIX + user_id, TERMINATE, None)
