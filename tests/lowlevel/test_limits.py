"""Per-app rate limits and quotas: each hit with its documented code, nothing else affected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pusher
import pytest
from pusher.errors import PusherBadStatus

from tests.support.config import OTHER_APP, app, build_config
from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

LIMITED = build_config(
    app(
        max_backend_events_per_second=5,
        max_read_requests_per_second=3,
        max_presence_members=2,
        max_channels_per_connection=3,
    ),
    OTHER_APP,
    server={"max_connections_per_ip": 5},
)


def test_backend_event_rate_limit_is_429_per_app(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(LIMITED)
    client = python_sdk(server)
    # Five channels count five events: the bucket is empty now.
    client.trigger([f"c{i}" for i in range(5)], "e", "x")
    with pytest.raises(PusherBadStatus) as info:
        client.trigger("c0", "e", "x")
    assert "429" in str(info.value)
    status, body, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/1/events",
        {"name": "e", "channel": "c", "data": "x"},
    )
    assert status == 429 and body["code"] == 429 and "per second" in body["error"]
    # Another app is not affected.
    assert python_sdk(server, "2", "other-key", "other-secret").trigger("c0", "e", "x") == {}


def test_read_request_rate_limit_is_429(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(LIMITED)
    client = python_sdk(server)
    for _ in range(3):
        assert client.channels_info() == {"channels": {}}
    with pytest.raises(PusherBadStatus):
        client.channels_info()
    assert python_sdk(server, "2", "other-key", "other-secret").channels_info() == {"channels": {}}


def test_presence_member_limit_and_channels_per_connection(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(LIMITED)
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")

    async def main() -> None:
        sockets = []
        for user in ("u1", "u2", "u3"):
            ws = await ws_connect(server.ws())
            sid = await established(ws)
            sockets.append(ws)
            reply = await subscribe(
                ws, "presence-small", **sdk.authenticate("presence-small", sid, {"user_id": user})
            )
            if user == "u3":
                assert reply["event"] == "pusher:subscription_error"
                assert reply["data"]["type"] == "LimitReached"
            else:
                assert reply["event"] == "pusher_internal:subscription_succeeded"
        ws = await ws_connect(server.ws())
        await established(ws)
        sockets.append(ws)
        for name in ("a", "b", "c"):
            assert (await subscribe(ws, name))["event"].endswith("succeeded")
        reply = await subscribe(ws, "d")  # the fourth channel of this connection
        assert reply["event"] == "pusher:subscription_error"
        assert reply["data"]["type"] == "LimitReached"
        # Re-subscribing to one it has is not a new channel.
        assert (await subscribe(ws, "a"))["event"].endswith("succeeded")
        for ws in sockets:
            await ws.close()

    asyncio.run(main())


def test_connections_per_ip_cap(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(LIMITED)

    async def main() -> None:
        sockets = [await ws_connect(server.ws()) for _ in range(5)]
        for ws in sockets:
            await established(ws)
        extra = await ws_connect(server.ws("other-key"))  # the cap is per address, any app
        error = await recv_json(extra)
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4100
        await asyncio.wait_for(extra.wait_closed(), 5)
        assert extra.protocol.close_rcvd is not None and extra.protocol.close_rcvd.code == 4100
        # The connected ones are untouched.
        await sockets[0].send(json.dumps({"event": "pusher:ping", "data": {}}))
        assert (await recv_json(sockets[0]))["event"] == "pusher:pong"
        await sockets[1].close()
        # The freed slot is usable again (once the server has seen the socket go).
        for _ in range(100):
            again = await ws_connect(server.ws())
            first = await recv_json(again)
            if first["event"] == "pusher:connection_established":
                break
            await again.close()
            await asyncio.sleep(0.02)
        assert first["event"] == "pusher:connection_established"
        for ws in [*sockets[2:], sockets[0], again]:
            await ws.close()

    asyncio.run(main())
