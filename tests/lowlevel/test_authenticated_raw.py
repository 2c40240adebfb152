"""Authenticated channels, sign-in and client events at the frame level: every refusal.

Auth strings come from the official Python SDK (``authenticate``, ``authenticate_user``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pusher
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.config import app, build_config
from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SDK = pusher.Pusher(
    app_id="1", key="app-key", secret="app-secret", encryption_master_key_base64=MASTER_KEY
)
WRONG = pusher.Pusher(app_id="1", key="app-key", secret="not-the-secret")


async def _connect(server: RunningServer) -> tuple[ClientConnection, str]:
    ws = await ws_connect(server.ws())
    return ws, await established(ws)


async def _signin(ws: ClientConnection, socket_id: str, user: dict[str, Any]) -> dict[str, Any]:
    await ws.send(
        json.dumps({"event": "pusher:signin", "data": SDK.authenticate_user(socket_id, user)})
    )
    return await recv_json(ws)


async def _pong_next(ws: ClientConnection) -> None:
    """Prove nothing else was sent: the next frame is the answer to a ping."""
    await ws.send('{"event":"pusher:ping","data":{}}')
    assert (await recv_json(ws))["event"] == "pusher:pong"


def test_private_channel_good_and_bad_auth(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        good = SDK.authenticate("private-ok", sid)
        assert (await subscribe(ws, "private-ok", **good))["event"].endswith("succeeded")
        for auth in (WRONG.authenticate("private-no", sid)["auth"], "", "app-key", "wrong:sig"):
            reply = await subscribe(ws, "private-no", auth=auth)
            assert reply["event"] == "pusher:subscription_error"
            assert reply["channel"] == "private-no"
            assert reply["data"]["type"] == "AuthError" and reply["data"]["status"] == 401
        # Another socket's signature is refused too.
        other = SDK.authenticate("private-no", "1.1")
        reply = await subscribe(ws, "private-no", **other)
        assert reply["data"]["status"] == 401
        await ws.close()

    asyncio.run(main())


def test_encrypted_channel_is_authorised_like_private(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        auth = SDK.authenticate("private-encrypted-x", sid)
        reply = await subscribe(ws, "private-encrypted-x", auth=auth["auth"])
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        await ws.send(
            json.dumps({"event": "client-x", "channel": "private-encrypted-x", "data": {}})
        )
        error = await recv_json(ws)
        assert error["event"] == "pusher:error" and error["data"]["code"] is None
        await ws.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("channel_data", "status", "kind"),
    [
        ("not json", 400, "AuthError"),
        (json.dumps({"user_info": {}}), 400, "AuthError"),
        (json.dumps({"user_id": "u" * 129}), 413, "LimitReached"),
        (json.dumps({"user_id": "u", "user_info": {"x": "y" * 1100}}), 413, "LimitReached"),
    ],
)
def test_presence_channel_data_refusals(
    server: RunningServer, channel_data: str, status: int, kind: str
) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        # A valid signature over channel_data the SDK would never build (it needs a dict).
        digest = hmac.new(
            b"app-secret", f"{sid}:presence-bad:{channel_data}".encode(), hashlib.sha256
        ).hexdigest()
        reply = await subscribe(
            ws, "presence-bad", auth=f"app-key:{digest}", channel_data=channel_data
        )
        assert reply["event"] == "pusher:subscription_error", reply
        assert (reply["data"]["status"], reply["data"]["type"]) == (status, kind)
        await ws.close()

    asyncio.run(main())


def test_presence_without_channel_data_needs_sign_in(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        auth = SDK.authenticate("presence-signed", sid)
        reply = await subscribe(ws, "presence-signed", auth=auth["auth"])
        assert reply["event"] == "pusher:subscription_error"
        assert reply["data"]["status"] == 401
        success = await _signin(ws, sid, {"id": "carol", "user_info": {"name": "Carol"}})
        assert success["event"] == "pusher:signin_success"
        assert json.loads(json.loads(success["data"])["user_data"])["id"] == "carol"
        reply = await subscribe(ws, "presence-signed", auth=auth["auth"])
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        presence = json.loads(reply["data"])["presence"]
        assert presence == {"ids": ["carol"], "hash": {"carol": {"name": "Carol"}}, "count": 1}
        await ws.close()

    asyncio.run(main())


def test_presence_channel_is_full_at_100_users(server: RunningServer) -> None:
    async def main() -> None:
        sockets = []
        for index in range(101):
            ws, sid = await _connect(server)
            sockets.append(ws)
            auth = SDK.authenticate("presence-full", sid, {"user_id": f"user-{index}"})
            reply = await subscribe(ws, "presence-full", **auth)
            if index < 100:
                assert reply["event"] == "pusher_internal:subscription_succeeded"
            else:
                assert reply["event"] == "pusher:subscription_error"
                assert reply["data"]["type"] == "LimitReached"
        # A second socket of a member already present is not a new member.
        ws, sid = await _connect(server)
        auth = SDK.authenticate("presence-full", sid, {"user_id": "user-5"})
        reply = await subscribe(ws, "presence-full", **auth)
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        assert json.loads(reply["data"])["presence"]["count"] == 100
        sockets.append(ws)
        for ws in sockets:
            await ws.close()

    asyncio.run(main())


def test_bad_signin_closes_with_4009(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        data = WRONG.authenticate_user(sid, {"id": "mallory"})
        await ws.send(json.dumps({"event": "pusher:signin", "data": data}))
        error = await recv_json(ws)
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4009
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4009

    asyncio.run(main())


def test_server_to_user_channel_only_for_that_user(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        reply = await subscribe(ws, "#server-to-user-dave", auth="")
        assert reply["event"] == "pusher:subscription_error" and reply["data"]["status"] == 401
        await _signin(ws, sid, {"id": "dave"})
        reply = await subscribe(ws, "#server-to-user-erin", auth="")
        assert reply["data"]["status"] == 401
        reply = await subscribe(ws, "#server-to-user-dave", auth="")
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        await asyncio.to_thread(
            python_sdk(server).send_to_user,
            "dave",
            "note",
            {"n": 1},
        )
        event = await recv_json(ws)
        assert event == {"event": "note", "channel": "#server-to-user-dave", "data": '{"n": 1}'}
        await ws.close()

    asyncio.run(main())


def test_client_event_refusals(server: RunningServer) -> None:
    async def main() -> None:
        ws, sid = await _connect(server)
        await subscribe(ws, "public-ce")
        await subscribe(ws, "private-ce", **SDK.authenticate("private-ce", sid))
        cases = [
            {"event": "client-x", "channel": "public-ce", "data": {}},
            {"event": "client-x", "channel": "private-not-joined", "data": {}},
            {"event": "client-x", "data": {}},
            {"event": "client-" + "x" * 200, "channel": "private-ce", "data": {}},
            {"event": "client-x", "channel": "private-ce", "data": "y" * 11000},
        ]
        for frame in cases:
            await ws.send(json.dumps(frame))
            error = await recv_json(ws)
            assert error["event"] == "pusher:error" and error["data"]["code"] is None, frame
        await _pong_next(ws)
        await ws.close()

    asyncio.run(main())


def test_client_events_disabled_for_the_app(server: RunningServer) -> None:
    async def main() -> None:
        ws = await ws_connect(server.ws("other-key"))
        sid = await established(ws)
        other = pusher.Pusher(app_id="2", key="other-key", secret="other-secret")
        await subscribe(ws, "private-x", **other.authenticate("private-x", sid))
        await ws.send(json.dumps({"event": "client-x", "channel": "private-x", "data": {}}))
        error = await recv_json(ws)
        assert error["event"] == "pusher:error" and "enable" in error["data"]["message"]
        await ws.close()

    asyncio.run(main())


def test_client_events_reach_others_not_the_sender_and_are_rate_limited(
    server: RunningServer,
) -> None:
    async def main() -> None:
        sender, sid = await _connect(server)
        receiver, rid = await _connect(server)
        await subscribe(sender, "private-rate", **SDK.authenticate("private-rate", sid))
        await subscribe(receiver, "private-rate", **SDK.authenticate("private-rate", rid))
        for index in range(11):
            await sender.send(
                json.dumps({"event": "client-n", "channel": "private-rate", "data": {"i": index}})
            )
        error = await recv_json(sender)
        assert error == {
            "event": "pusher:error",
            "data": {"code": 4301, "message": "Client event rejected due to rate limit"},
        }
        got = [await recv_json(receiver) for _ in range(10)]
        assert [g["data"]["i"] for g in got] == list(range(10))
        assert all("user_id" not in g for g in got)  # private channel: no user_id
        await _pong_next(receiver)  # the 11th never arrived
        await _pong_next(sender)  # the sender got no echo and is still connected
        await sender.close()
        await receiver.close()

    asyncio.run(main())


AUTH_TIMEOUT = build_config(app(user_authentication_timeout=1), server={"pong_timeout": 30})


def test_sign_in_deadline(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(AUTH_TIMEOUT)

    async def main() -> None:
        lazy, _ = await _connect(server)
        diligent, sid = await _connect(server)
        assert (await _signin(diligent, sid, {"id": "frank"}))["event"] == "pusher:signin_success"
        error = await recv_json(lazy, timeout=5)
        assert error["data"]["code"] == 4009
        await asyncio.wait_for(lazy.wait_closed(), 5)
        assert lazy.protocol.close_rcvd is not None and lazy.protocol.close_rcvd.code == 4009
        await _pong_next(diligent)
        status, _, _ = signed(server.host, server.port, "GET", "/apps/1/channels")
        assert status == 200
        await diligent.close()

    asyncio.run(main())
