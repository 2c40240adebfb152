"""Connecting with pusher-js: the handshake, socket ids, refusals and unsubscribing.

Refusals (docs/protocol.md §2, §18): the server answers the upgrade with a ``pusher:error``
carrying a 4001/4003/4004 code and closes; pusher-js treats 4001-4099 as "refused", goes to
``disconnected`` and schedules no reconnect (docs/protocol.md §2, §4, §18). "No reconnect"
is read from pusher-js itself: in state ``disconnected`` with no retry timer and no
connection attempt running, nothing in pusher-js will ever connect again on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pusher

from tests.support.config import QUOTA_APP, build_config
from tests.support.pusherjs import Driver, JsClient
from tests.support.server import RunningServer


def test_connection_established_frame_and_socket_id(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    client = js.client("client", raw=True)

    # docs/protocol.md §4: both SDKs insist on digits.digits.
    assert client.socket_id is not None
    assert re.fullmatch(r"\d+\.\d+", client.socket_id)
    # docs/protocol.md §2, §4: the first frame, data a JSON string with a non-zero timeout.
    first = json.loads(js.wait_for({"type": "raw", "client": "client"})["text"])
    assert first["event"] == "pusher:connection_established"
    assert isinstance(first["data"], str)
    data = json.loads(first["data"])
    assert data["socket_id"] == client.socket_id
    assert isinstance(data["activity_timeout"], int)
    assert data["activity_timeout"] > 0
    assert "channel" not in first

    states = [(r["previous"], r["current"]) for r in client.find(type="state")]
    assert states == [("initialized", "connecting"), ("connecting", "connected")]

    # The Python SDK accepts the id for exclusion (it validates it client-side).
    channel = f"my-channel-{uid}"
    client.subscribe(channel)
    pusher_client.trigger(channel, "excluded", {}, client.socket_id)
    pusher_client.trigger(channel, "included", {})
    client.wait_event(channel, "included")
    assert client.events(channel, "excluded") == []


def test_socket_ids_are_unique(js: Driver) -> None:
    ids = {js.client(f"c{i}").socket_id for i in range(5)}
    assert len(ids) == 5


def _assert_refused(client: JsClient, code: int) -> None:
    error = client.wait(type="error")
    assert error["error"]["type"] == "WebSocketError"
    assert error["error"]["error"]["type"] == "PusherError"
    assert error["error"]["error"]["data"]["code"] == code
    client.wait(type="state", current="disconnected")
    assert client.find(type="connected") == []
    states = [r["current"] for r in client.find(type="state")]
    assert states == ["connecting", "disconnected"]
    # Nothing scheduled: pusher-js will not try again by itself.
    assert client.inspect() == {
        "state": "disconnected",
        "socket_id": None,
        "retry_pending": False,
        "connecting": False,
        "has_connection": False,
    }


def test_unknown_key_is_refused_with_4001_and_not_retried(js: Driver) -> None:
    client = js.client("stranger", key="no-such-key", wait=False)
    _assert_refused(client, 4001)


def test_disabled_app_is_refused_with_4003_and_not_retried(js: Driver) -> None:
    client = js.client(
        "disabled", key="disabled-key", secret="disabled-secret", app_id="3", wait=False
    )
    _assert_refused(client, 4003)


QUOTA_CONFIG = build_config(QUOTA_APP)


def test_connection_over_quota_is_refused_with_4004_until_one_leaves(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    """max_connections = 2: the third pusher-js client is refused; after one leaves, a
    new one gets in. (A server of its own, so other tests' connections cannot interfere.)"""
    js = make_driver(make_server(QUOTA_CONFIG))
    room = f"presence-room-{uid}"
    first = js.client("q1", key="quota-key", secret="quota-secret", app_id="4")
    second = js.client("q2", key="quota-key", secret="quota-secret", app_id="4")
    first.subscribe(room, presence={"user_id": "q1", "user_info": {}})
    second.subscribe(room, presence={"user_id": "q2", "user_info": {}})

    third = js.client("q3", key="quota-key", secret="quota-secret", app_id="4", wait=False)

    _assert_refused(third, 4004)
    assert first.inspect()["state"] == "connected"
    assert second.inspect()["state"] == "connected"

    first.disconnect()
    # member_removed is sent when the server drops q1's connection, which frees its slot.
    second.wait(type="member_removed", channel=room)
    fourth = js.client("q4", key="quota-key", secret="quota-secret", app_id="4")
    assert fourth.socket_id is not None


def test_unsubscribed_channel_gets_no_more_events(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel, sync = f"my-channel-{uid}", f"sync-{uid}"
    # pusher-js drops frames for channels it no longer has, so look at the wire.
    client = js.client("client", raw=True)
    client.subscribe(channel)

    client.unsubscribe(channel)
    client.subscribe(sync)  # answered only after the unsubscribe was processed

    assert pusher_client.channel_info(channel) == {"occupied": False}
    pusher_client.trigger_batch(
        [
            {"channel": channel, "name": "gone", "data": "x"},
            {"channel": sync, "name": "marker", "data": "y"},
        ]
    )
    client.wait_frame("marker", sync)
    frames = [json.loads(r["text"]) for r in client.find(type="raw")]
    assert [f for f in frames if f.get("event") == "gone"] == []


def test_disconnect_removes_the_connections_subscriptions(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"presence-room-{uid}"
    leaver = js.client("leaver")
    stayer = js.client("stayer")
    leaver.subscribe(channel, presence={"user_id": "leaver", "user_info": {}})
    stayer.subscribe(channel, presence={"user_id": "stayer", "user_info": {}})

    leaver.disconnect()
    stayer.wait(type="member_removed", channel=channel)

    assert pusher_client.channel_info(channel, ["subscription_count", "user_count"]) == {
        "occupied": True,
        "subscription_count": 1,
        "user_count": 1,
    }


def test_invalid_channel_names_get_subscription_error_400(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """docs/protocol.md §6, §10: bad characters or more than 164 characters; the connection
    stays up."""
    client = js.client("client")
    longest = f"long-{uid}-".ljust(164, "x")
    too_long = longest + "x"

    for name in ("bad name", too_long):
        client.subscribe(name, wait=False)
        error = client.wait(type="subscription_error", channel=name)
        assert error["data"]["type"] == "InvalidChannel"
        assert error["data"]["status"] == 400

    client.subscribe(longest)
    pusher_client.trigger(longest, "fits", {})
    client.wait_event(longest, "fits")
    assert client.inspect()["state"] == "connected"
