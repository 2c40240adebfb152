"""The WebSocket side driven by a plain WebSocket client: handshake, codes, bad frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.server import RunningServer


async def _closed_with(ws: object, code: int) -> dict[str, object]:
    """The pusher:error frame sent before the close, and check the close code."""
    message = await recv_json(ws)  # type: ignore[arg-type]
    with pytest.raises(ConnectionClosed) as info:
        await recv_json(ws)  # type: ignore[arg-type]
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == code
    return message


def test_connection_established_shape(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            message = await recv_json(ws)
            assert message["event"] == "pusher:connection_established"
            assert isinstance(message["data"], str), (
                "data must be a JSON string (docs/protocol.md §3)"
            )
            data = json.loads(message["data"])
            assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
            assert data["activity_timeout"] == 120
            assert "channel" not in message

    asyncio.run(main())


def test_socket_ids_are_unique(server: RunningServer) -> None:
    async def main() -> None:
        sockets = [await ws_connect(server.ws()) for _ in range(20)]
        ids = {await established(ws) for ws in sockets}
        assert len(ids) == 20
        for ws in sockets:
            await ws.close()

    asyncio.run(main())


def test_missing_protocol_is_taken_as_7(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws(query="client=java")) as ws:
            await established(ws)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        ("no-such-key", "protocol=7", 4001),
        ("disabled-key", "protocol=7", 4003),
        ("app-key", "protocol=abc", 4007),
        ("app-key", "protocol=8", 4007),
        ("app-key", "protocol=4", 4007),
    ],
)
def test_refused_connections(server: RunningServer, key: str, query: str, code: int) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws(key, query)) as ws:
            message = await _closed_with(ws, code)
            assert message["event"] == "pusher:error"
            assert message["data"]["code"] == code  # type: ignore[index]
            assert message["data"]["message"]  # type: ignore[index]

    asyncio.run(main())


def test_path_not_found(server: RunningServer) -> None:
    async def main() -> None:
        url = f"ws://{server.host}:{server.port}/app/?protocol=7"
        async with await ws_connect(url) as ws:
            await _closed_with(ws, 4005)

    asyncio.run(main())


def test_connection_quota(server: RunningServer) -> None:
    async def main() -> None:
        first = await ws_connect(server.ws("quota-key"))
        second = await ws_connect(server.ws("quota-key"))
        await established(first)
        await established(second)
        async with await ws_connect(server.ws("quota-key")) as third:
            await _closed_with(third, 4004)
        await first.close()
        # A freed slot is usable again.
        async with await ws_connect(server.ws("quota-key")) as again:
            await established(again)
        await second.close()

    asyncio.run(main())


def test_ping_pong(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            await ws.send('{"event":"pusher:ping","data":{}}')
            assert await recv_json(ws) == {"event": "pusher:pong", "data": {}}

    asyncio.run(main())


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2,3]",
        '{"data":{}}',
        '{"event":42}',
        '{"event":"pusher:subscribe","data":"{broken"}',
        '{"event":"pusher:subscribe","data":{}}',
        '{"event":"something-else","data":{}}',
        '{"event":"client-x","channel":"public","data":{}}',
    ],
)
def test_bad_messages_get_error_null_and_keep_the_connection(
    server: RunningServer, frame: str
) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            await ws.send(frame)
            message = await recv_json(ws)
            assert message["event"] == "pusher:error"
            assert message["data"]["code"] is None
            assert message["data"]["message"]
            await ws.send('{"event":"pusher:ping","data":{}}')
            assert (await recv_json(ws))["event"] == "pusher:pong"

    asyncio.run(main())


def test_unknown_pusher_event_is_ignored(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            await ws.send('{"event":"pusher:whatever","data":{}}')
            await ws.send('{"event":"pusher:unsubscribe","data":{"channel":"never-joined"}}')
            await ws.send('{"event":"pusher:ping","data":{}}')
            # Nothing came back for the first two: the next frame is the pong.
            assert (await recv_json(ws))["event"] == "pusher:pong"

    asyncio.run(main())


def test_subscribe_data_as_json_string(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            await ws.send(
                json.dumps({"event": "pusher:subscribe", "data": json.dumps({"channel": "str-d"})})
            )
            message = await recv_json(ws)
            assert message == {
                "event": "pusher_internal:subscription_succeeded",
                "channel": "str-d",
                "data": "{}",
            }

    asyncio.run(main())


def test_duplicate_subscribe_counts_once(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            for _ in range(2):
                reply = await subscribe(ws, "dup-channel")
                assert reply["event"] == "pusher_internal:subscription_succeeded"
            status, body, _ = signed(
                server.host,
                server.port,
                "GET",
                "/apps/1/channels/dup-channel",
                extra={"info": "subscription_count"},
            )
            assert (status, body) == (200, {"occupied": True, "subscription_count": 1})
            await ws.send('{"event":"pusher:unsubscribe","data":{"channel":"dup-channel"}}')
            await ws.send('{"event":"pusher:ping","data":{}}')
            assert (await recv_json(ws))["event"] == "pusher:pong"
            status, body, _ = signed(
                server.host,
                server.port,
                "GET",
                "/apps/1/channels/dup-channel",
                extra={"info": "subscription_count"},
            )
            assert (status, body) == (200, {"occupied": False, "subscription_count": 0})

    asyncio.run(main())


@pytest.mark.parametrize(
    "channel",
    ["", "bad channel", "bad/channel", "x" * 165, "#server-to-user-someone", "ünicode"],
)
def test_invalid_channel_names(server: RunningServer, channel: str) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            message = await subscribe(ws, channel, auth="")
            assert message["event"] == "pusher:subscription_error"
            assert message["channel"] == channel
            assert message["data"]["status"] in (400, 401)
            assert message["data"]["type"] in ("InvalidChannel", "AuthError")

    asyncio.run(main())


def test_longest_allowed_channel_name(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            name = "-_=@,.;" + "a" * 157
            assert len(name) == 164
            message = await subscribe(ws, name)
            assert message["event"] == "pusher_internal:subscription_succeeded"

    asyncio.run(main())


def test_one_megabyte_frame_closes_with_1009_only_that_connection(server: RunningServer) -> None:
    async def main() -> None:
        bystander = await ws_connect(server.ws())
        await established(bystander)
        await subscribe(bystander, "bystander")
        ws = await ws_connect(server.ws(), max_size=None)
        await established(ws)
        with contextlib.suppress(ConnectionClosed):
            await ws.send("x" * (1024 * 1024))
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 1009
        status, _, _ = signed(
            server.host,
            server.port,
            "POST",
            "/apps/1/events",
            {"name": "still-here", "channel": "bystander", "data": "ok"},
        )
        assert status == 200
        message = await recv_json(bystander)
        assert message["event"] == "still-here"
        await bystander.close()

    asyncio.run(main())


def test_invalid_utf8_closes_with_1007(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            # A text frame with invalid UTF-8, written below the client library's checks.
            ws.protocol.send_frame(  # type: ignore[attr-defined]
                __import__("websockets").frames.Frame(
                    __import__("websockets").frames.Opcode.TEXT, b'{"event":"\xff\xfe"}'
                )
            )
            ws.send_data()  # type: ignore[attr-defined]
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1007

    asyncio.run(main())


def test_binary_frames_are_ignored_and_fragments_assembled(server: RunningServer) -> None:
    async def main() -> None:
        async with await ws_connect(server.ws()) as ws:
            await established(ws)
            await ws.send(b"\x00\x01binary")
            await ws.send(iter(['{"event":"pusher:', 'ping","data":{}}']))
            assert (await recv_json(ws))["event"] == "pusher:pong"

    asyncio.run(main())


def test_frames_split_across_reads_and_many_idle_periods(server: RunningServer) -> None:
    """The frame parser is dropped while a connection is idle: a frame cut in two halves
    that arrive separately, and frames after idle periods, must still parse."""
    import socket
    import time

    async def main() -> None:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        reply = b""
        while b"connection_established" not in reply:
            reply += sock.recv(4096)

        def frame(text: bytes) -> bytes:
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
            return bytes([0x81, 0x80 | len(text)]) + mask + masked

        for round_ in range(3):
            whole = frame(b'{"event":"pusher:ping","data":{}}')
            sock.sendall(whole[:7])
            # Nothing to await here: the pause only makes the halves separate reads.
            time.sleep(0.05)
            sock.sendall(whole[7:])
            got = sock.recv(4096)
            assert b"pusher:pong" in got, (round_, got)
        sock.close()

    asyncio.run(main())
