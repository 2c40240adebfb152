"""Activity timeouts, the server's ping, the pong deadline, and slow subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable

from tests.support.config import app, build_config
from tests.support.polling import eventually
from tests.support.raw import established, occupied, recv_json, signed, subscribe, ws_connect
from tests.support.server import RunningServer

FAST_TIMEOUTS = build_config(app(activity_timeout=1), server={"pong_timeout": 1.0})


def test_quiet_client_is_pinged_first_then_closed_with_4201(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(FAST_TIMEOUTS)

    async def main() -> None:
        # A client that never answers: the library's own keepalive is off, and it sends nothing.
        ws = await ws_connect(server.ws(), ping_interval=None)
        data = json.loads((await recv_json(ws))["data"])
        assert data["activity_timeout"] == 1
        started = time.monotonic()
        ping = await recv_json(ws, timeout=5)
        assert ping == {"event": "pusher:ping", "data": {}}
        error = await recv_json(ws, timeout=5)
        assert error["event"] == "pusher:error"
        assert error["data"]["code"] == 4201
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 4201
        # Never before the activity timeout plus the pong timeout.
        assert time.monotonic() - started >= 1.0

    asyncio.run(main())


def test_client_that_answers_pings_stays_connected(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(FAST_TIMEOUTS)

    async def main() -> None:
        ws = await ws_connect(server.ws(), ping_interval=None)
        await established(ws)
        for _ in range(3):
            ping = await recv_json(ws, timeout=5)
            assert ping["event"] == "pusher:ping"
            await ws.send('{"event":"pusher:pong","data":{}}')
        # Still open: a request is answered.
        await ws.send('{"event":"pusher:ping","data":{}}')
        reply = await recv_json(ws, timeout=5)
        assert reply["event"] in ("pusher:pong", "pusher:ping")
        await ws.close()

    asyncio.run(main())


SLOW = build_config(app(), server={"write_buffer_limit": 65536})


def test_subscriber_that_stops_reading_is_closed_and_others_keep_receiving(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(SLOW)

    async def main() -> None:
        # The slow subscriber: a raw socket with a tiny receive buffer that never reads
        # after subscribing.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect((server.host, server.port))
        slow.sendall(
            b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        handshake = slow.recv(4096)
        assert handshake.startswith(b"HTTP/1.1 101")
        subscribe_frame = b'{"event":"pusher:subscribe","data":{"channel":"firehose"}}'
        mask = b"\x00\x00\x00\x00"
        slow.sendall(bytes([0x81, 0x80 | len(subscribe_frame)]) + mask + subscribe_frame)

        fast = await ws_connect(server.ws(), max_queue=None)
        await established(fast)
        assert (await subscribe(fast, "firehose"))["event"].endswith("subscription_succeeded")

        def count() -> int:
            status, body, _ = signed(
                server.host,
                server.port,
                "GET",
                "/apps/1/channels/firehose",
                extra={"info": "subscription_count"},
            )
            assert status == 200
            return int(body["subscription_count"])

        assert count() == 2
        data = "x" * 10_000
        batch = {"batch": [{"channel": "firehose", "name": "big", "data": data}] * 10}
        sent = 0
        received = 0
        # Publish until the slow socket is dropped (bounded: 20 MB at most).
        while sent < 2000:
            status, _, _ = signed(server.host, server.port, "POST", "/apps/1/batch_events", batch)
            assert status == 200
            sent += 10
            while received < sent:
                message = await recv_json(fast)
                assert message["event"] == "big"
                received += 1
            if count() == 1:
                break
        assert count() == 1, "the subscriber that stopped reading was not dropped"
        assert received == sent  # the reading subscriber got every event

        # Reading its backlog now, the slow one finds the close frame with 4100 at the end.
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := slow.recv(1 << 20):
                tail = (tail + chunk)[-128:]
        slow.close()
        assert b"\x88" in tail and b"\x10\x04" in tail, tail[-40:]
        await fast.close()

    asyncio.run(main())


def test_closed_connection_leaves_its_channels(server: RunningServer) -> None:
    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "leaving-channel")
        assert "leaving-channel" in occupied(server.host, server.port)
        await ws.close()
        await eventually(lambda: "leaving-channel" not in occupied(server.host, server.port))

    asyncio.run(main())


def test_abrupt_disconnect_is_cleaned_up(server: RunningServer) -> None:
    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "abrupt-channel")
        assert "abrupt-channel" in occupied(server.host, server.port)
        ws.transport.abort()
        await eventually(lambda: "abrupt-channel" not in occupied(server.host, server.port))

    asyncio.run(main())
