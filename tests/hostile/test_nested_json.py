"""JSON nested far too deep, on every input path, gets the documented answer.

msgspec gives up only near the interpreter's recursion limit; before JSON depth was
bounded (64 levels), 1,000 levels raised RecursionError: the WebSocket dropped without a
close frame with a traceback logged per frame, a nested presence ``channel_data`` got no
reply at all in cluster mode, ``/batch_events`` answered 500 and ``/events`` a misleading
400. Now, per docs/protocol.md: a message that is not usable JSON is a ``pusher:error``
with code null and the connection stays open; unusable presence ``channel_data`` is a
``pusher:subscription_error`` (AuthError, 400); unusable sign-in ``user_data`` closes with
4009; an HTTP body that is not usable JSON is a JSON 400. Each is sent many times, and the
server logs nothing for it (no traceback, at most one line per kind).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.cluster.conftest import redis_server, two_nodes  # noqa: F401 - fixtures
from tests.support.config import app, build_config
from tests.support.raw import established, recv_json, signed, ws_connect
from tests.support.server import RunningServer

# Past the 64-level bound; just below the interpreter's recursion limit (decodable by
# msgspec, but not encodable again from deeper in the stack); far past it.
DEPTHS = (100, 990, 5000)
REPEAT = 10


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


SECRET = "app-secret"


def _sign(text: str) -> str:
    return "app-key:" + hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


_probes = iter(range(1_000_000))


async def _still_open(ws: ClientConnection) -> None:
    """The connection still answers: a subscribe to a fresh public channel succeeds. (Not
    a ping: pongs are rate-limited, and these tests probe more often than a client pings.)"""
    channel = f"probe-{next(_probes)}"
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    reply = await recv_json(ws)
    assert (reply["event"], reply.get("channel")) == (
        "pusher_internal:subscription_succeeded",
        channel,
    )


def _log_is_quiet(server: RunningServer) -> None:
    """No traceback, and at most one warning or error line per kind."""
    text = "".join(server.output)
    assert "Traceback" not in text and "RecursionError" not in text
    records = [json.loads(line) for line in server.output if line.startswith("{")]
    loud = Counter(
        (r.get("logger"), r.get("kind"), r["message"][:60])
        for r in records
        if r.get("level") in ("warning", "error", "critical")
    )
    assert all(count <= 1 for count in loud.values()), loud


async def _message_paths(node: RunningServer) -> None:
    ws = await ws_connect(node.ws(), max_size=None)
    socket_id = await established(ws)
    channel = "private-nested"
    await ws.send(
        json.dumps(
            {
                "event": "pusher:subscribe",
                "data": {"channel": channel, "auth": _sign(f"{socket_id}:{channel}")},
            }
        )
    )
    assert (await recv_json(ws))["event"] == "pusher_internal:subscription_succeeded"
    for depth in DEPTHS:
        await _frames(ws, depth, channel)
        await _presence_path(ws, socket_id, depth)
        await _signin_path(node, depth)
    await ws.close()


async def _frames(ws: ClientConnection, depth: int, channel: str) -> None:
    for frame in (
        nested(depth),  # the whole message
        nested_object(depth),
        json.dumps({"event": "pusher:subscribe", "data": "x"})[:-2] + nested(depth) + "}",
        '{"event":"pusher:subscribe","data":' + nested(depth) + "}",
        '{"event":"pusher:subscribe","data":{"channel":"news","x":' + nested(depth) + "}}",
    ):
        for _ in range(REPEAT):
            await ws.send(frame)
            answer = await recv_json(ws)
            assert answer["event"] == "pusher:error", answer
            assert answer["data"]["code"] is None
        await _still_open(ws)

    # A client event whose data nests too deep (on a channel it may send on).
    event = '{"event":"client-x","channel":"' + channel + '","data":' + nested_object(depth) + "}"
    for _ in range(REPEAT):
        await ws.send(event)
        answer = await recv_json(ws)
        assert answer["event"] == "pusher:error" and answer["data"]["code"] is None
    await _still_open(ws)


async def _join_presence(
    ws: ClientConnection, socket_id: str, channel: str, channel_data: str
) -> dict[str, Any]:
    """Subscribe with ``channel_data`` signed correctly; the server's answer."""
    data = {
        "channel": channel,
        "channel_data": channel_data,
        "auth": _sign(f"{socket_id}:{channel}:{channel_data}"),
    }
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
    return await recv_json(ws)


async def _presence_path(ws: ClientConnection, socket_id: str, depth: int) -> None:
    """channel_data is a string inside the message: signed correctly, yet unusable."""
    for index in range(REPEAT):
        channel = f"presence-nested-{depth}-{index}"
        channel_data = '{"user_id":"u","user_info":' + nested(depth) + "}"
        answer = await _join_presence(ws, socket_id, channel, channel_data)
        assert answer["event"] == "pusher:subscription_error", answer
        assert answer["channel"] == channel
        data = answer["data"] if isinstance(answer["data"], dict) else json.loads(answer["data"])
        assert (data["type"], data["status"]) == ("AuthError", 400)
    await _still_open(ws)


async def _signin_path(node: RunningServer, depth: int) -> None:
    """Unusable user_data (signed correctly) closes with 4009, as any bad sign-in."""
    for _ in range(3):
        ws = await ws_connect(node.ws(), max_size=None)
        socket_id = await established(ws)
        user_data = '{"id":"u","user_info":' + nested(depth) + "}"
        await ws.send(
            json.dumps(
                {
                    "event": "pusher:signin",
                    "data": {
                        "user_data": user_data,
                        "auth": _sign(f"{socket_id}::user::{user_data}"),
                    },
                }
            )
        )
        answer = await recv_json(ws)
        assert answer["event"] == "pusher:error" and answer["data"]["code"] == 4009, answer
        await ws.wait_closed()
        assert ws.close_code == 4009


def _http_paths(node: RunningServer) -> None:
    for depth in DEPTHS:
        _http_paths_at(node, depth)


def _http_paths_at(node: RunningServer, depth: int) -> None:
    bodies: dict[str, list[bytes]] = {
        "/apps/1/events": [
            nested(depth).encode(),
            ('{"name":"e","channels":' + nested(depth) + ',"data":"x"}').encode(),
            ('{"name":"e","channel":"c","data":"x","info":' + nested_object(depth) + "}").encode(),
        ],
        "/apps/1/batch_events": [
            nested(depth).encode(),
            ('{"batch":' + nested(depth) + "}").encode(),
            ('{"batch":[{"name":"e","channel":"c","data":' + nested_object(depth) + "}]}").encode(),
        ],
    }
    for path, raws in bodies.items():
        for raw in raws:
            for _ in range(REPEAT // 2):
                status, body, headers = signed(node.host, node.port, "POST", path, raw)
                assert status in (400, 413), (path, raw[:60], status, body)
                assert headers["content-type"] == "application/json"
                assert body["code"] == status and body["error"]
    # The data string itself may be deep JSON text: it is opaque, and published as is.
    status, _, _ = signed(
        node.host,
        node.port,
        "POST",
        "/apps/1/events",
        {"name": "e", "channel": "c", "data": nested(depth)},
    )
    assert status == 200


def test_nested_json_on_every_path_memory(make_server: Any) -> None:
    node = make_server(
        build_config(
            app(client_events=True), server={"host": "127.0.0.1", "max_frame_bytes": 1 << 20}
        )
    )
    asyncio.run(_message_paths(node))
    _http_paths(node)
    _log_is_quiet(node)


def test_nested_presence_channel_data_in_cluster_mode(
    two_nodes: tuple[RunningServer, RunningServer],  # noqa: F811 - the fixture
) -> None:
    """In cluster mode the join waits on Redis: a nested member used to get no reply."""
    first, second = two_nodes

    async def run() -> None:
        for node in (first, second):
            ws = await ws_connect(node.ws(), max_size=None)
            socket_id = await established(ws)
            for depth in DEPTHS:
                await _presence_path(ws, socket_id, depth)
            # The connection still works for a real member after it.
            channel_data = json.dumps({"user_id": "ok"})
            answer = await _join_presence(ws, socket_id, "presence-after", channel_data)
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
            await ws.close()

    asyncio.run(run())
    for node in (first, second):
        _http_paths(node)
        _log_is_quiet(node)
