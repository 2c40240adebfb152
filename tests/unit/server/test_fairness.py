"""The per-connection budget (server/connection.py, server/websocket.py): a read is parsed
at most READ_BUDGET bytes per loop turn, frames draw on an allowance that closes a
flooder with 4100, pings are answered at most PONG_RATE times a second, and messages
waiting on the cluster state are bounded in bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from clarion import metrics
from clarion.server import connection, websocket
from clarion.server.connection import MAX_PENDING_BYTES, PONG_RATE, READ_BUDGET
from tests.unit.server.edge import (
    Clock,
    build_node,
    client_frame,
    close_code,
    server_texts,
    upgraded,
)

PING = b'{"event":"pusher:ping","data":{}}'


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The time the WebSocket layer and the connection read."""
    return Clock().install(monkeypatch, websocket, connection)


def _events(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(text) for text in server_texts(data)]


def test_a_big_read_is_parsed_one_budget_per_loop_turn() -> None:
    async def main() -> None:
        conn, transport = upgraded(build_node())
        frame = client_frame(b"not json")  # each is answered with a pusher:error
        count = 3 * READ_BUDGET // len(frame) + 7
        conn.data_received(frame * count)
        answered = [len(server_texts(transport.data))]
        assert not transport.reading
        while len(answered) < 10 and answered[-1] < count:
            await asyncio.sleep(0)  # one loop turn
            answered.append(len(server_texts(transport.data)))
        per_budget = READ_BUDGET // len(frame)
        assert answered[0] in (per_budget, per_budget + 1)
        assert answered[-1] == count
        assert len(answered) == 4  # four budgets, one per turn
        # Reading resumed once everything held was parsed, and only then.
        assert transport.reading and transport.pauses == 1 and transport.resumes == 1

    asyncio.run(main())


def test_bytes_read_while_others_are_held_come_after_them() -> None:
    async def main() -> None:
        conn, transport = upgraded(build_node())
        first = client_frame(b"first") * (2 * READ_BUDGET // 11)
        conn.data_received(first)
        conn.data_received(client_frame(b"last"))  # the transport had not paused yet
        for _ in range(5):
            await asyncio.sleep(0)
        messages = [event["data"]["message"] for event in _events(transport.data)]
        assert len(messages) == len(first) // 11 + 1
        assert "last" not in " ".join(messages[:-1])  # order kept

    asyncio.run(main())


def test_frames_past_the_allowance_close_with_4100(clock: Clock) -> None:
    async def main() -> None:
        # The burst: 10 seconds of 1 frame a second, plus twice 1 channel.
        node = build_node({"max_channels_per_connection": 1}, max_messages_per_second=1)
        conn, transport = upgraded(node)
        flooded = metrics.flood_disconnects.labels("1")
        before = flooded._value.get()
        conn.data_received(client_frame(b"not json") * 12)
        assert close_code(transport.data) is None
        conn.data_received(client_frame(b"not json"))
        assert close_code(transport.data) == 4100
        assert _events(transport.data)[-1] == {
            "event": "pusher:error",
            "data": {"code": 4100, "message": "Too many messages; slow down"},
        }
        assert flooded._value.get() == before + 1
        # Nothing more is read or parsed from it.
        assert not transport.reading
        written = len(transport.written)
        conn.data_received(client_frame(b"not json") * 100)
        await asyncio.sleep(0)
        assert len(transport.written) == written

    asyncio.run(main())


def test_the_sustained_rate_is_never_closed(clock: Clock) -> None:
    async def main() -> None:
        node = build_node({"max_channels_per_connection": 1}, max_messages_per_second=10)
        conn, transport = upgraded(node)
        frame = client_frame(b'{"event":"pusher:pong","data":{}}')  # answered with nothing
        for _ in range(300):  # five minutes at 9 frames a second, a second at a time
            clock.now += 1.0
            conn.data_received(frame * 9)
        assert close_code(transport.data) is None
        # At 20 a second, the burst (10 s x 10 + 2) goes in about ten seconds.
        seconds = 0
        while close_code(transport.data) is None and seconds < 30:
            seconds += 1
            clock.now += 1.0
            conn.data_received(frame * 20)
        assert close_code(transport.data) == 4100
        assert 9 <= seconds <= 12

    asyncio.run(main())


def test_pings_are_answered_at_most_pong_rate_a_second(clock: Clock) -> None:
    async def main() -> None:
        conn, transport = upgraded(build_node())
        conn.data_received(client_frame(PING) * (3 * PONG_RATE))
        assert _events(transport.data) == [{"event": "pusher:pong", "data": {}}] * PONG_RATE
        transport.written.clear()
        clock.now += 0.5
        # Any spelling of a ping counts the same.
        conn.data_received(client_frame(b'{"event":"pusher:ping"}') * PONG_RATE)
        assert len(_events(transport.data)) == PONG_RATE // 2
        transport.written.clear()
        clock.now += 10
        conn.data_received(client_frame(PING))
        assert _events(transport.data) == [{"event": "pusher:pong", "data": {}}]

    asyncio.run(main())


def test_messages_waiting_on_the_state_are_bounded_in_bytes() -> None:
    async def main() -> None:
        node = build_node()
        answered = asyncio.Event()
        subscribe = node.hub.subscribe

        async def slow_subscribe(*args: Any) -> Any:
            await answered.wait()
            return await subscribe(*args)

        node.hub.subscribe = slow_subscribe  # type: ignore[method-assign]
        conn, transport = upgraded(node)
        conn.data_received(
            client_frame(b'{"event":"pusher:subscribe","data":{"channel":"waiting"}}')
        )
        await asyncio.sleep(0)
        # Messages of 10 KB behind the join: the reading stops once 64 KiB wait.
        big = b'{"event":"pusher:unsubscribe","data":{"channel":"' + b"x" * 10_000 + b'"}}'
        conn.data_received(client_frame(big) * 10)
        for _ in range(40):
            await asyncio.sleep(0)
        waiting = conn._pending
        assert waiting is not None
        assert MAX_PENDING_BYTES <= conn._pending_bytes < MAX_PENDING_BYTES + len(big) + READ_BUDGET
        assert len(waiting) < 10 and not transport.reading
        answered.set()
        for _ in range(40):
            await asyncio.sleep(0)
        assert conn._pending is None and conn._pending_bytes == 0
        assert transport.reading
        assert _events(transport.data)[0]["event"] == "pusher_internal:subscription_succeeded"

    asyncio.run(main())


@pytest.mark.parametrize("cut", [1, 2, 6, 8])
def test_a_parser_cut_inside_a_frame_is_not_lent_to_another_connection(cut: int) -> None:
    # A read may end inside a frame with nothing left in the parser's buffer (after its
    # first two bytes, say): that parser still belongs to its connection.
    async def main() -> None:
        node = build_node()
        first, first_transport = upgraded(node)
        second, second_transport = upgraded(node)
        frame = client_frame(PING)
        first.data_received(frame[:cut])
        second.data_received(client_frame(PING))
        first.data_received(frame[cut:])
        for transport in (first_transport, second_transport):
            assert [e["event"] for e in _events(transport.data)] == ["pusher:pong"]
            assert close_code(transport.data) is None

    asyncio.run(main())
