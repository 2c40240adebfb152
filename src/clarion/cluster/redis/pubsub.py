"""Fan-out between nodes on Redis pub/sub.

:class:`RedisBroker` publishes each frame to the Redis channel of its Pusher channel
(``P:ch:A:C``) and subscribes this node only to the Redis channels it has local
subscribers for. This node's own subscribers are written to at once; other nodes get
the frame through Redis, in publish order. A message is the publishing node's id, the
socket id to skip, a NUL byte, then the frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from clarion.cluster.interfaces import Broker, BrokerUnavailable
from clarion.cluster.redis.link import NODE_ID_LENGTH, RedisLink, stop_tasks

log = logging.getLogger("clarion.redis")


class RedisBroker(Broker):
    needs_watch = True

    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link
        self._node = link.node_id.encode()
        self._outgoing: list[tuple[str, bytes]] = []
        self._sending = False
        self._wake = asyncio.Event()
        self._interest: dict[str, int] = {}
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel_prefix = link.keys.channel_prefix
        self._redis_channel = link.keys.redis_channel
        link.on_reconnect(self._resubscribe)

    def ready(self) -> bool:
        # Not "whole": a node waiting for its peers after an outage still serves its
        # clients, and all nodes waiting at once must not leave the balancer with none.
        return self.link.up

    def publish(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        assert self._deliver is not None
        self._deliver(app_id, channel, frame, exclude)
        if not self.link.up:
            raise BrokerUnavailable(
                "the Redis link is down: delivered to this node's subscribers only"
            )
        payload = self._node + (exclude or "").encode() + b"\x00" + frame
        self._outgoing.append((self._redis_channel(app_id, channel), payload))
        if len(self._outgoing) == 1:
            self._wake.set()
        if not self.link.whole:
            raise BrokerUnavailable(
                "sent to the nodes on the Redis link, but not every node has reconnected "
                "since the outage: subscribers on those may miss it"
            )

    async def _writer(self) -> None:
        """Send queued frames in order, pipelined: one round trip per batch."""
        client = self.link.client
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outgoing = self._outgoing, []
            if not batch:
                continue
            self._sending = True
            # Not link.guarded(): frames queued while the link was up are tried even if
            # it was marked down since (there is no local state to fall back to).
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for name, payload in batch:
                        pipe.publish(name, payload)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.error("lost %d frame(s) for other nodes: %s", len(batch), exc)
                self.link.failed(exc)
            except Exception:
                log.exception("lost %d frame(s) for other nodes", len(batch))
            finally:
                self._sending = False

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
            if pubsub is None or not self.link.up:
                await asyncio.sleep(0.1)
                continue
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
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        if kind == "subscribe":
            future = self._confirm.pop(name, None)
            if future is not None and not future.done():
                future.set_result(None)
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

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for future in self._confirm.values():
            if not future.done():
                future.set_result(None)
        self._confirm.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _resubscribe(self) -> None:
        await self._drop_pubsub()
        pubsub = self.link.client.pubsub()
        await pubsub.ping()
        # Channels watched while these subscribes were on their way are subscribed too
        # (watch() cannot, with no subscription in place): repeat until none is missing.
        done: set[str] = set()
        while missing := [name for name in self._interest if name not in done]:
            await pubsub.subscribe(*missing)
            done.update(missing)
        self._pubsub = pubsub

    async def start(self) -> None:
        self._pubsub = self.link.client.pubsub()
        await self._pubsub.ping()
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._reader())]

    async def stop(self) -> None:
        # Whatever is still queued goes out before the link closes (bounded wait).
        for _ in range(50):
            if not (self._outgoing or self._sending) or not self.link.up:
                break
            self._wake.set()
            await asyncio.sleep(0.01)
        await stop_tasks(self._tasks)
        await self._drop_pubsub()
