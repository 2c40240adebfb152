"""RedisBroker.publish: confirmed publishes, the publish timeout, the queue's byte bound.

No Redis is contacted: the link's client is a fake whose pipeline answers when the test
says so (or never, as a frozen Redis).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from clarion.cluster.interfaces import BrokerUnavailable
from clarion.cluster.memory import MemoryBroker
from clarion.cluster.redis import pubsub
from clarion.cluster.redis.link import RedisLink
from clarion.cluster.redis.pubsub import RedisBroker


class FakePipeline:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.commands: list[tuple[str, bytes]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def publish(self, name: str, payload: bytes) -> None:
        self.commands.append((name, payload))

    async def execute(self) -> list[int]:
        self.client.batches.append(self.commands)
        await self.client.answer.wait()
        return [1] * len(self.commands)


class FakeClient:
    """Redis as the writer sees it; ``answer`` cleared: a frozen Redis."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, bytes]]] = []
        self.answer = asyncio.Event()
        self.answer.set()

    def pipeline(self, transaction: bool) -> FakePipeline:
        return FakePipeline(self)


def broker(timeout: float = 0.2, max_queued_bytes: int = 1 << 20) -> tuple[RedisBroker, Any]:
    link = RedisLink("redis://127.0.0.1:1", "test", timeout=timeout)
    link.up = True
    client = FakeClient()
    link.client = client  # type: ignore[assignment]
    redis_broker = RedisBroker(link, max_queued_bytes=max_queued_bytes)
    delivered: list[tuple[str, bytes]] = []
    redis_broker.bind(lambda app, channel, frame, exclude: delivered.append((channel, frame)))
    redis_broker._tasks = [asyncio.create_task(redis_broker._writer())]
    return redis_broker, client


async def stop(redis_broker: RedisBroker) -> None:
    for task in redis_broker._tasks:
        task.cancel()
    await asyncio.wait(redis_broker._tasks)


def test_the_memory_broker_has_nothing_to_confirm() -> None:
    memory = MemoryBroker()
    memory.bind(lambda *args: None)
    assert memory.publish("1", "news", b"frame", None, confirm=True) is None


def test_a_confirmed_publish_completes_once_redis_acknowledged_its_batch() -> None:
    async def main() -> None:
        redis_broker, client = broker()
        client.answer.clear()
        first = redis_broker.publish("1", "news", b"one", None, confirm=True)
        second = redis_broker.publish("1", "other", b"two", "1.1", confirm=True)
        assert first is not None and second is not None
        # Fire-and-forget frames are queued alike, with nothing to wait for.
        assert redis_broker.publish("1", "news", b"event", None) is None
        waiting = asyncio.gather(first, second)
        await asyncio.sleep(0.01)
        assert not waiting.done()  # Redis has not answered yet
        client.answer.set()
        await waiting
        # One round trip for the three frames, in publish order.
        assert [[payload[-3:] for _, payload in batch] for batch in client.batches] == [
            [b"one", b"two", b"ent"]
        ]
        await stop(redis_broker)

    asyncio.run(main())


def test_a_frozen_redis_gets_a_503_within_the_timeout_and_the_link_goes_down() -> None:
    async def main() -> None:
        redis_broker, client = broker(timeout=0.2)
        client.answer.clear()  # frozen: the bytes go out, no answer ever comes
        confirmation = redis_broker.publish("1", "news", b"one", None, confirm=True)
        assert confirmation is not None
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await confirmation
        assert time.monotonic() - started < 0.2 + 0.15
        assert not redis_broker.link.up
        # Down: the next publish is refused at once (after its local delivery).
        with pytest.raises(BrokerUnavailable):
            redis_broker.publish("1", "news", b"two", None, confirm=True)
        await asyncio.sleep(0.1)
        assert redis_broker._queued_bytes == 0  # the stuck batch was given up
        await stop(redis_broker)

    asyncio.run(main())


def test_a_caller_that_goes_away_does_not_cancel_the_others_confirmation() -> None:
    async def main() -> None:
        redis_broker, client = broker()
        client.answer.clear()
        first = redis_broker.publish("1", "news", b"one", None, confirm=True)
        second = redis_broker.publish("1", "news", b"two", None, confirm=True)
        assert first is not None and second is not None
        gone = asyncio.ensure_future(first)
        await asyncio.sleep(0.01)
        gone.cancel()
        client.answer.set()
        await second
        await stop(redis_broker)

    asyncio.run(main())


def test_the_queue_is_bounded_in_bytes_while_redis_does_not_answer() -> None:
    async def main() -> None:
        redis_broker, client = broker(timeout=5.0, max_queued_bytes=1000)
        client.answer.clear()
        dropped = redis_broker._dropped._value.get()
        for _ in range(50):  # client events: 50 x ~120 bytes
            assert redis_broker.publish("1", "news", b"x" * 100, None) is None
        assert redis_broker._queued_bytes <= 1000
        assert redis_broker._dropped._value.get() - dropped > 0
        # An HTTP publish that does not fit is refused rather than answered 200 later.
        with pytest.raises(BrokerUnavailable):
            redis_broker.publish("1", "news", b"x" * 100, None, confirm=True)
        await stop(redis_broker)

    asyncio.run(main())


# --- the admin console's rows ------------------------------------------------------------


class FakePubSub:
    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    async def subscribe(self, *names: str) -> None:
        self.subscribed.extend(names)

    async def unsubscribe(self, *names: str) -> None:
        self.unsubscribed.extend(names)


def sent(client: Any) -> list[tuple[str, bytes]]:
    return [command for batch in client.batches for command in batch]


def message(name: str, data: bytes) -> dict[str, Any]:
    return {"type": "message", "channel": name.encode(), "data": data}


OTHER = b"f" * 16  # another node's id


def test_a_console_subscribes_to_its_apps_rows_and_announces_itself() -> None:
    async def main() -> None:
        redis_broker, client = broker()
        pubsub = redis_broker._pubsub = FakePubSub()
        await redis_broker.watch_rows("1")
        await redis_broker.watch_rows("1")  # a second console: nothing more to say
        assert pubsub.subscribed == ["test:tap:1"]
        await asyncio.sleep(0.01)
        node = redis_broker._node
        assert sent(client) == [("test:taps", node + b"+1")]
        redis_broker.unwatch_rows("1")
        assert pubsub.unsubscribed == []
        redis_broker.unwatch_rows("1")
        await asyncio.sleep(0.01)
        assert pubsub.unsubscribed == ["test:tap:1"]
        assert sent(client)[-1] == ("test:taps", node + b"-1")
        await stop(redis_broker)

    asyncio.run(main())


def test_rows_go_out_only_while_another_node_watches_and_come_in_to_the_taps() -> None:
    async def main() -> None:
        redis_broker, client = broker()
        watched: list[tuple[str, bool]] = []
        rows: list[tuple[str, bytes]] = []
        redis_broker.bind_rows(
            lambda app_id, row: rows.append((app_id, row)),
            lambda app_id, on: watched.append((app_id, on)),
        )
        node = redis_broker._node
        redis_broker._receive(message("test:taps", node + b"+1"))  # our own: ignored
        assert watched == []
        redis_broker._receive(message("test:taps", OTHER + b"+1"))
        redis_broker._receive(message("test:taps", b"e" * 16 + b"+1"))  # a second node
        assert watched == [("1", True)]
        redis_broker._receive(message("test:taps", OTHER + b"-1"))
        assert watched == [("1", True)]
        redis_broker._receive(message("test:taps", b"e" * 16 + b"-1"))
        assert watched == [("1", True), ("1", False)]
        # Another node's row comes in; our own (as Redis echoes it) does not.
        redis_broker._receive(message("test:tap:1", OTHER + b'{"type":"Connection"}'))
        redis_broker._receive(message("test:tap:1", node + b'{"type":"Connection"}'))
        assert rows == [("1", b'{"type":"Connection"}')]
        redis_broker.publish_row("1", b"{}")
        await asyncio.sleep(0.01)
        assert sent(client) == [("test:tap:1", node + b"{}")]
        await stop(redis_broker)

    asyncio.run(main())


def test_a_new_node_asks_and_the_watching_nodes_answer() -> None:
    async def main() -> None:
        redis_broker, client = broker()
        redis_broker._pubsub = FakePubSub()
        await redis_broker.watch_rows("7")
        redis_broker._receive(message("test:taps", OTHER + b"?"))
        await asyncio.sleep(0.01)
        node = redis_broker._node
        assert sent(client) == [("test:taps", node + b"+7"), ("test:taps", node + b"+7")]
        await stop(redis_broker)

    asyncio.run(main())


def test_a_watch_whose_announcements_stop_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pubsub, "TAPS_ANNOUNCE", 0.05)

    async def main() -> None:
        redis_broker, _ = broker()
        watched: list[tuple[str, bool]] = []
        redis_broker.bind_rows(lambda *a: None, lambda app_id, on: watched.append((app_id, on)))
        redis_broker._receive(message("test:taps", OTHER + b"+1"))
        redis_broker._tap_watchers["1"][OTHER] = time.monotonic() - 1  # its hold ran out
        task = asyncio.create_task(redis_broker._announce_taps())
        try:
            async with asyncio.timeout(5):
                while watched != [("1", True), ("1", False)]:
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
        await stop(redis_broker)

    asyncio.run(main())


def test_rows_never_take_more_than_a_quarter_of_the_queue() -> None:
    async def main() -> None:
        redis_broker, client = broker(max_queued_bytes=4000)
        client.answer.clear()  # a frozen Redis: the queue fills
        for _ in range(100):
            redis_broker.publish_row("1", b"x" * 100)
        assert redis_broker._queued_bytes <= 1000
        # Frames still fit in the rest.
        assert redis_broker.publish("1", "news", b"y" * 2000, None) is None
        assert redis_broker._queued_bytes > 2000
        client.answer.set()
        await stop(redis_broker)

    asyncio.run(main())
