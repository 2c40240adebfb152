"""Fan-out between nodes on Redis pub/sub.

:class:`RedisBroker` publishes each frame to the Redis channel of its Pusher channel
(``P:ch:A:C``) and subscribes this node only to the Redis channels it has local
subscribers for. This node's own subscribers are written to at once; other nodes get
the frame through Redis, in publish order. A message is the publishing node's id, the
socket id to skip, a NUL byte, then the frame.

Frames leave in batches, one pipeline round trip per batch. An HTTP publish waits for
the acknowledgement of its batch (``confirm``): it is answered 200 only once Redis took
the frame, and 503 when that did not happen within the publish timeout, which also marks
the link down (a Redis that stopped answering is treated as one that went away). Client
events and the hub's own frames are not waited for; the queue they share is bounded in
bytes, and what does not fit is dropped and counted.

The admin console's rows travel the same way, only while some node has a console open
on their app: that node subscribes to ``P:tap:A`` and announces itself on ``P:taps``
(every node listens there; nothing is said while nobody watches), again every
TAPS_ANNOUNCE seconds. The other nodes format and send the app's rows while an
announcement holds (TAPS_HOLD: a node that died stops announcing). Rows never wait and
never push frames out: past a quarter of the outgoing queue's bound they are dropped.

The subscription connection outlives an outage of the link when it can: if, once Redis
answers again, it is still the same connection and answers a ping, nothing published
meanwhile was missed, so it is kept (a new one would have missed every frame published
before it subscribed). One to a master that is no more (Sentinel moved it) is replaced.
The last channel a subscription connection subscribes is the node's own ``P:here:N``:
the other nodes take a subscriber of it on their Redis as the proof that this node is
back after an outage (see :mod:`.membership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError

from clarion import metrics
from clarion.cluster.interfaces import (
    Broker,
    BrokerUnavailable,
    RowReceived,
    WatchedElsewhere,
)
from clarion.cluster.redis.link import NODE_ID_LENGTH, RedisLink, stop_tasks, text

log = logging.getLogger("clarion.redis")

# Bytes of frames queued for Redis (waiting or in flight) past which client events and
# internal frames are dropped and HTTP publishes answered 503: while Redis is frozen the
# queue must not grow with whatever clients send.
MAX_QUEUED_BYTES = 16 * 1024 * 1024
DROP_LOG_INTERVAL = 10.0  # seconds between two log lines about dropped frames
# Seconds between two announcements of a node's open consoles, and how long one holds.
TAPS_ANNOUNCE = 5.0
TAPS_HOLD = 3 * TAPS_ANNOUNCE
# What an announcement on P:taps says after the node id: watching, not any more, and
# "a node started: say who watches".
TAP_WATCH, TAP_UNWATCH, TAP_HELLO = b"+", b"-", b"?"


class RedisBroker(Broker):
    needs_watch = True

    def __init__(self, link: RedisLink, max_queued_bytes: int = MAX_QUEUED_BYTES) -> None:
        super().__init__()
        self.link = link
        self.timeout = link.timeout
        self.max_queued_bytes = max_queued_bytes
        self._node = link.node_id.encode()
        self._outgoing: list[tuple[str, bytes]] = []
        self._queued_bytes = 0  # of the frames waiting and in flight
        # The acknowledgement of the batch being queued, made when a publish asks for it,
        # and the timer that fails it after the publish timeout.
        self._pending: asyncio.Future[None] | None = None
        self._pending_timer: asyncio.TimerHandle | None = None
        self._sending = False
        self._wake = asyncio.Event()
        self._interest: dict[str, int] = {}
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        # Set when the subscription connection reconnected under us (redis-py does that
        # silently): frames were missed, so it is not kept across an outage.
        self._subscription_broken = False
        self._pong: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel_prefix = link.keys.channel_prefix
        self._redis_channel = link.keys.redis_channel
        # Subscribed after every other channel: a Redis counting a subscriber of it
        # (PUBSUB NUMSUB) has this node hearing every channel it watched before.
        self._here = link.keys.here(link.node_id)
        self._dropped = metrics.cluster_frames_dropped()
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL
        # The admin console's rows (see the module docstring).
        self._rows_received: RowReceived | None = None
        self._watched_elsewhere: WatchedElsewhere | None = None
        self._watching: dict[str, int] = {}  # app -> consoles open on this node
        # app -> other node -> until when (monotonic) its announcement holds
        self._tap_watchers: dict[str, dict[bytes, float]] = {}
        self._taps = link.keys.taps
        self._tap_prefix = link.keys.tap_prefix
        self._tap_rows = link.keys.tap_rows
        link.on_reconnect(self._resubscribe)

    def ready(self) -> bool:
        # Not "whole": a node waiting for its peers after an outage still serves its
        # clients, and all nodes waiting at once must not leave the balancer with none.
        return self.link.up

    def publish(
        self, app_id: str, channel: str, frame: bytes, exclude: str | None, confirm: bool = False
    ) -> Awaitable[None] | None:
        assert self._deliver is not None
        self._deliver(app_id, channel, frame, exclude)
        if not self.link.up:
            raise BrokerUnavailable(
                "the Redis link is down: delivered to this node's subscribers only"
            )
        payload = self._node + (exclude or "").encode() + b"\x00" + frame
        if self._queued_bytes + len(payload) > self.max_queued_bytes:
            if confirm:
                raise BrokerUnavailable(
                    "Redis is not taking frames as fast as they come: delivered to this "
                    "node's subscribers only"
                )
            self._drop()
            return None
        self._outgoing.append((self._redis_channel(app_id, channel), payload))
        self._queued_bytes += len(payload)
        if len(self._outgoing) == 1:
            self._wake.set()
        if not self.link.whole:
            raise BrokerUnavailable(
                "sent to the nodes on the Redis link, but not every node has reconnected "
                "since the outage: subscribers on those may miss it"
            )
        if not confirm:
            return None
        pending = self._pending
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._pending = loop.create_future()
            self._pending_timer = loop.call_later(self.timeout, self._expired, pending)
        # Shielded: a caller that goes away (its request cancelled) must not cancel the
        # acknowledgement the other publishes of the batch wait for.
        return asyncio.shield(pending)

    def _expired(self, pending: asyncio.Future[None]) -> None:
        """The publish timeout of a batch ran out before Redis acknowledged it."""
        if pending.done():
            return
        if self._pending is pending:  # not even sent yet: later frames get their own
            self._pending, self._pending_timer = None, None
        pending.set_exception(
            BrokerUnavailable(f"Redis did not acknowledge the frame within {self.timeout:g} s")
        )
        self.link.failed(TimeoutError(f"no answer from Redis within {self.timeout:g} s"))

    def _drop(self) -> None:
        self._dropped.inc()
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warning(
                "Redis is not taking frames (%d bytes queued): dropped %d client event(s) or "
                "internal frame(s) for the other nodes",
                self._queued_bytes,
                self._drops_unlogged,
            )
            self._drop_logged_at, self._drops_unlogged = now, 0

    async def _writer(self) -> None:
        """Send queued frames in order, pipelined: one round trip per batch."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outgoing = self._outgoing, []
            pending, self._pending = self._pending, None
            timer, self._pending_timer = self._pending_timer, None
            if not batch:
                continue
            size = sum(len(payload) for _, payload in batch)
            self._sending = True
            failure: str | None = None
            # Not link.guarded(): frames queued while the link was up are tried even if
            # it was marked down since (there is no local state to fall back to).
            try:
                # Absolute: a frozen Redis accepts the bytes and never answers.
                async with asyncio.timeout(self.timeout):
                    await self._send(batch)
            except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                failure = str(exc) or f"no answer within {self.timeout:g} s"
                log.error("%d frame(s) for other nodes not acknowledged: %s", len(batch), failure)
                self.link.failed(exc)
            except asyncio.CancelledError:  # shutting down: nobody waits in vain
                if pending is not None and not pending.done():
                    pending.set_exception(BrokerUnavailable("the node is shutting down"))
                raise
            except Exception as exc:
                failure = repr(exc)
                log.exception("%d frame(s) for other nodes not acknowledged", len(batch))
            finally:
                self._sending = False
                self._queued_bytes -= size
                if timer is not None:
                    timer.cancel()
            if pending is not None and not pending.done():
                if failure is None:
                    pending.set_result(None)
                else:
                    pending.set_exception(BrokerUnavailable(f"Redis failed: {failure}"))

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        """One batch of frames to Redis, one round trip."""
        async with self.link.client.pipeline(transaction=False) as pipe:
            for name, payload in batch:
                pipe.publish(name, payload)
            await pipe.execute()

    async def watch(self, app_id: str, channel: str) -> None:
        name = self._redis_channel(app_id, channel)
        count = self._interest.get(name, 0)
        self._interest[name] = count + 1
        if count or not self.link.up or self._pubsub is None:
            return
        future = self._confirm.get(name)
        if future is None:
            future = self._confirm[name] = asyncio.get_running_loop().create_future()
            if not await self.link.guarded(lambda: self._subscribe(name)):
                self._confirm.pop(name, None)
                return
        # Until Redis confirms, a publish on another node could miss this node.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 2.0)

    async def _subscribe(self, name: str) -> bool:
        await self._pubsub.subscribe(name)
        return True

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
        await self.link.guarded(lambda: self._pubsub.unsubscribe(name))

    async def _reader(self) -> None:
        while True:
            pubsub = self._pubsub
            if pubsub is None:
                await asyncio.sleep(0.1)
                continue
            # Read even while the link is down: a subscription that survives an outage
            # delivers what other nodes published as soon as Redis answers again.
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
        if kind == "pong":
            pong = self._pong
            if pong is not None and not pong.done():
                pong.set_result(None)
            return
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        if kind == "subscribe":
            future = self._confirm.pop(name, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind == "message" and (name == self._taps or name.startswith(self._tap_prefix)):
            self._receive_tap(name, message["data"])
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

    def _reconnected(self, connection: Any) -> None:
        """redis-py reconnected a connection we watch (and subscribed it again itself)."""
        pubsub = self._pubsub
        if pubsub is not None and connection is pubsub.connection:
            self._subscription_broken = True
            log.warning("cluster subscription reconnected: frames published meanwhile missed")
            self.link.failed(ConnectionError("the subscription connection was re-established"))

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for future in self._confirm.values():
            if not future.done():
                future.set_result(None)
        self._confirm.clear()
        pong, self._pong = self._pong, None
        if pong is not None and not pong.done():
            pong.set_exception(ConnectionError("the subscription was dropped"))
        if pubsub is not None:
            if pubsub.connection is not None:
                pubsub.connection.deregister_connect_callback(self._reconnected)
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _new_pubsub(self) -> Any:
        pubsub: Any = self.link.client.pubsub()
        await pubsub.ping()  # connects it
        pubsub.connection.register_connect_callback(self._reconnected)
        self._subscription_broken = False
        return pubsub

    async def _still_listening(self, pubsub: Any) -> bool:
        """After an outage: whether the subscription connection held (every frame
        published meanwhile will still arrive), with its channels brought up to date."""
        subscribed = {text(name) for name in pubsub.channels}
        missing = [name for name in self._interest if name not in subscribed]
        extra = [name for name in subscribed if name not in self._interest and name != self._here]
        pong = self._pong = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                if missing:
                    await pubsub.subscribe(*missing)
                if extra:
                    await pubsub.unsubscribe(*extra)
                await pubsub.ping()
                # The answer comes after those of the subscribes, read by the reader.
                await pong
        except Exception as exc:
            log.info("cluster subscription did not survive the outage (%r)", exc)
            return False
        finally:
            if self._pong is pong:
                self._pong = None
        return pubsub is self._pubsub and not self._subscription_broken

    async def _resubscribe(self) -> None:
        pubsub = self._pubsub
        if (
            pubsub is not None
            and not self._subscription_broken
            # Not one to a master that is no more (Sentinel moved it): it hears nothing.
            and self.link.endpoint.current(pubsub.connection)
            and await self._still_listening(pubsub)
        ):
            return
        await self._drop_pubsub()
        pubsub = await self._new_pubsub()
        # Channels watched while these subscribes were on their way are subscribed too
        # (watch() cannot, with no subscription in place): repeat until none is missing.
        done: set[str] = set()
        while missing := [name for name in self._interest if name not in done]:
            await pubsub.subscribe(*missing)
            done.update(missing)
        await pubsub.subscribe(self._here)  # last: tells the others it hears them all
        self._pubsub = pubsub

    async def start(self) -> None:
        pubsub = await self._new_pubsub()
        await pubsub.subscribe(self._here)
        self._pubsub = pubsub
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._reader())]
        await self._start_taps()

    async def stop(self) -> None:
        # Whatever is still queued goes out before the link closes (bounded wait).
        for _ in range(50):
            if not (self._outgoing or self._sending) or not self.link.up:
                break
            self._wake.set()
            await asyncio.sleep(0.01)
        await stop_tasks(self._tasks)
        pending, self._pending = self._pending, None
        if self._pending_timer is not None:
            self._pending_timer.cancel()
        if pending is not None and not pending.done():
            pending.set_exception(BrokerUnavailable("the node is shutting down"))
        await self._drop_pubsub()

    # --- the admin console's rows (see the module docstring) ----------------------------

    def bind_rows(self, received: RowReceived, watched_elsewhere: WatchedElsewhere) -> None:
        self._rows_received = received
        self._watched_elsewhere = watched_elsewhere

    async def _start_taps(self) -> None:
        """Listen to the announcements (kept across outages with the other channels),
        and ask the nodes already watching to say so."""
        self._interest[self._taps] = self._interest.get(self._taps, 0) + 1
        await self._subscribe(self._taps)  # on its shard, on a Redis Cluster
        self._queue_extra(self._taps, self._node + TAP_HELLO, self.max_queued_bytes)
        self._tasks.append(asyncio.create_task(self._announce_taps()))

    async def watch_rows(self, app_id: str) -> None:
        count = self._watching.get(app_id, 0)
        self._watching[app_id] = count + 1
        if count:
            return
        name = self._tap_rows(app_id)
        self._interest[name] = 1
        self._announce(TAP_WATCH, app_id)
        if self.link.up and self._pubsub is not None:
            await self.link.guarded(lambda: self._subscribe(name))

    def unwatch_rows(self, app_id: str) -> None:
        count = self._watching.get(app_id, 0) - 1
        if count > 0:
            self._watching[app_id] = count
            return
        self._watching.pop(app_id, None)
        name = self._tap_rows(app_id)
        self._interest.pop(name, None)
        self._announce(TAP_UNWATCH, app_id)
        if self.link.up and self._pubsub is not None:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(name))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def publish_row(self, app_id: str, row: bytes) -> None:
        self._queue_extra(self._tap_rows(app_id), self._node + row, self.max_queued_bytes // 4)

    def _announce(self, what: bytes, app_id: str) -> None:
        self._queue_extra(self._taps, self._node + what + app_id.encode(), self.max_queued_bytes)

    def _queue_extra(self, name: str, payload: bytes, limit: int) -> bool:
        """Queue a message that nothing waits for behind the frames, while the queue
        holds less than ``limit`` bytes; False when it was dropped."""
        if not self.link.up or self._queued_bytes + len(payload) > limit:
            return False
        self._outgoing.append((name, payload))
        self._queued_bytes += len(payload)
        if len(self._outgoing) == 1:
            self._wake.set()
        return True

    async def _announce_taps(self) -> None:
        """Say again which apps this node watches; forget the other nodes' watches whose
        announcement ran out."""
        while True:
            await asyncio.sleep(TAPS_ANNOUNCE)
            for app_id in self._watching:
                self._announce(TAP_WATCH, app_id)
            now = time.monotonic()
            for app_id, nodes in list(self._tap_watchers.items()):
                for node, until in list(nodes.items()):
                    if until < now:
                        del nodes[node]
                if not nodes:
                    self._tap_watched(app_id, None)

    def _receive_tap(self, name: str, data: bytes) -> None:
        node = data[:NODE_ID_LENGTH]
        if node == self._node:
            return
        if name != self._taps:  # a row of another node
            if self._rows_received is not None:
                self._rows_received(name[len(self._tap_prefix) :], data[NODE_ID_LENGTH:])
            return
        what = data[NODE_ID_LENGTH : NODE_ID_LENGTH + 1]
        app_id = data[NODE_ID_LENGTH + 1 :].decode()
        if what == TAP_HELLO:
            for watched in self._watching:
                self._announce(TAP_WATCH, watched)
        elif what == TAP_WATCH:
            self._tap_watched(app_id, node)
        elif what == TAP_UNWATCH:
            nodes = self._tap_watchers.get(app_id)
            if nodes is not None:
                nodes.pop(node, None)
                if not nodes:
                    self._tap_watched(app_id, None)

    def _tap_watched(self, app_id: str, node: bytes | None) -> None:
        """``node`` watches ``app_id`` (None: the last watcher elsewhere is gone)."""
        nodes = self._tap_watchers.get(app_id)
        if node is None:
            self._tap_watchers.pop(app_id, None)
            if self._watched_elsewhere is not None:
                self._watched_elsewhere(app_id, False)
            return
        if nodes is None:
            nodes = self._tap_watchers[app_id] = {}
            if self._watched_elsewhere is not None:
                self._watched_elsewhere(app_id, True)
        nodes[node] = time.monotonic() + TAPS_HOLD
