"""User sign-in and server-to-user events through pusher-js (docs/protocol.md §13, §8).

pusher-js signs in with ``pusher.signin()``: its ``userAuthentication.customHandler``
signs the user data with the Node SDK's ``authenticateUser``. Once the server answers
``pusher:signin_success``, pusher-js subscribes itself to ``#server-to-user-{id}`` and
routes that channel's events to ``pusher.user.bind(event, ...)``.
"""

from __future__ import annotations

import json

import pusher
from pusher.signature import sign

from tests.support.pusherjs import Driver, JsClient


def _user(user_id: str, **extra: object) -> dict[str, object]:
    return {"id": user_id, "user_info": {"name": user_id.split("-")[0].title()}, **extra}


def test_signin_subscribes_the_server_to_user_channel(js: Driver, uid: str) -> None:
    alice = f"alice-{uid}"
    client = js.client("alice")

    done = client.signin(_user(alice))

    assert done is not None
    assert done["user_data"] == _user(alice)
    assert done["channel"] == f"#server-to-user-{alice}"
    assert client.details() == {
        "user_data": _user(alice),
        "server_to_user": {"name": f"#server-to-user-{alice}", "subscribed": True},
    }
    assert client.inspect()["state"] == "connected"


def test_send_to_user_reaches_every_connection_of_that_user_only(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    tab1, tab2, other = js.client("alice-1"), js.client("alice-2"), js.client("bob")
    for client, user in ((tab1, alice), (tab2, alice), (other, bob)):
        client.user_bind("greeting", "from-node", "marker")
        client.signin(_user(user))

    assert pusher_client.send_to_user(alice, "greeting", {"hello": "alice"}) == {}
    reply = js.node_sdk("sendToUser", alice, "from-node", {"n": 1})
    assert reply == {"status": 200, "body": {}}

    for tab in (tab1, tab2):
        assert tab.wait(type="user_event", event="greeting")["data"] == {"hello": "alice"}
        assert tab.wait(type="user_event", event="from-node")["data"] == {"n": 1}
    # Bob's connection would have got alice's events before this one.
    pusher_client.send_to_user(bob, "marker", {"for": "bob"})
    assert other.wait(type="user_event", event="marker")["data"] == {"for": "bob"}
    assert other.user_events("greeting") == []
    assert other.user_events("from-node") == []
    # Each of alice's connections got each event once.
    pusher_client.send_to_user(alice, "marker", {"for": "alice"})
    for tab in (tab1, tab2):
        tab.wait(type="user_event", event="marker")
        assert [e["event"] for e in tab.user_events()] == ["greeting", "from-node", "marker"]


def test_signin_made_by_the_python_sdk(js: Driver, pusher_client: pusher.Pusher, uid: str) -> None:
    """docs/protocol.md §36: the Python SDK writes user_data with spaces; it is verified as
    received."""
    carol = f"carol-{uid}"
    client = js.client("carol")
    assert client.socket_id is not None
    auth = pusher_client.authenticate_user(client.socket_id, _user(carol))
    assert ": " in auth["user_data"]
    client.user_bind("hello")

    client.signin(auth_response=auth)

    assert client.details()["user_data"] == _user(carol)
    pusher_client.send_to_user(carol, "hello", "world")
    assert client.wait(type="user_event", event="hello")["data"] == "world"


def test_bad_signin_signature_is_4009_and_pusher_js_stays_disconnected(
    js: Driver, uid: str
) -> None:
    client = js.client("forger")
    since = js.mark()

    client.signin(_user(f"mallory-{uid}"), secret="wrong-secret", wait=False)

    error = client.wait(type="pusher_error", since=since)
    assert error["data"]["code"] == 4009
    client.wait_closed(4009, since=since)
    client.wait(type="state", current="disconnected", since=since)
    # The socket itself was closed with 4009 (the only socket this driver opened).
    assert js.wait_for({"type": "ws_close"}, since=since)["code"] == 4009
    done = client.wait(type="signin_done", since=since)
    assert done["user_data"] is None
    client.assert_stopped()
    states = [(r["previous"], r["current"]) for r in client.find(type="state")]
    assert states == [
        ("initialized", "connecting"),
        ("connecting", "connected"),
        ("connected", "disconnected"),
    ]
    assert client.find(type="connecting_in") == []


def test_signin_with_a_non_string_id_is_refused_with_4009(js: Driver, uid: str) -> None:
    """A correctly signed user_data whose id is a number is still no valid sign-in
    (docs/protocol.md §13): pusher-js would take its signin_success as a sign-out, so the
    server refuses it."""
    client = js.client("numeric")
    assert client.socket_id is not None
    user_data = json.dumps({"id": 42, "user_info": {"uid": uid}})
    auth = {
        "auth": "app-key:" + sign("app-secret", f"{client.socket_id}::user::{user_data}"),
        "user_data": user_data,
    }
    since = js.mark()

    client.signin(auth_response=auth, wait=False)

    assert client.wait(type="pusher_error", since=since)["data"]["code"] == 4009
    client.wait_closed(4009, since=since)
    client.wait(type="state", current="disconnected", since=since)
    client.assert_stopped()


def _probe_subscribe(client: JsClient, channel: str, auth: str = "") -> dict[str, object]:
    """Subscribe with a hand-made frame (pusher-js refuses ``#`` names and unknown
    presence auth); the answer reaches ``pusher.bind_global`` as pusher-js knows no such
    channel object."""
    since = client.driver.mark()
    client.send_event("pusher:subscribe", {"auth": auth, "channel": channel})
    report = client.wait(type="global", event="pusher:subscription_error", since=since)
    data: dict[str, object] = report["data"]
    return data


def test_server_to_user_channel_of_another_user_is_refused(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """docs/protocol.md §13: subscribing to #server-to-user-X needs being signed in as exactly X."""
    bob, mallory = f"bob-{uid}", f"mallory-{uid}"
    victim = js.client("bob")
    victim.user_bind("secret")
    victim.signin(_user(bob))
    signed_in = js.client("mallory")
    signed_in.bind_global()
    signed_in.user_bind("marker")
    signed_in.signin(_user(mallory))
    anonymous = js.client("anonymous")
    anonymous.bind_global()

    for attacker in (signed_in, anonymous):
        error = _probe_subscribe(attacker, f"#server-to-user-{bob}")
        assert error["type"] == "AuthError"
        assert error["status"] == 401

    pusher_client.send_to_user(bob, "secret", {"pin": 1234})
    assert victim.wait(type="user_event", event="secret")["data"] == {"pin": 1234}
    pusher_client.send_to_user(mallory, "marker", {})
    signed_in.wait(type="user_event", event="marker")
    assert signed_in.find(type="global", event="secret") == []
    public = f"public-{uid}"
    anonymous.subscribe(public)
    pusher_client.trigger(public, "marker", {})
    anonymous.wait_event(public, "marker")
    assert anonymous.find(type="global", event="secret") == []


# --- presence through sign-in (docs/protocol.md §8) --------------------------------------


def test_presence_without_channel_data_uses_the_signed_in_user(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-room-{uid}"
    alice = f"alice-{uid}"
    bob = js.client("bob")
    bob.subscribe(room, presence={"user_id": "bob", "user_info": {"name": "Bob"}})
    client = js.client("alice")
    client.signin(_user(alice, watchlist=[]))

    # The authoriser calls authorizeChannel(socket_id, channel): no channel_data.
    seen = client.subscribe(room)

    assert seen is not None
    members = seen["members"]
    assert members["my_id"] == alice
    assert members["me"] == {"id": alice, "info": {"name": "Alice"}}
    assert members["members"] == {"bob": {"name": "Bob"}, alice: {"name": "Alice"}}
    assert members["count"] == 2
    added = bob.wait(type="member_added", channel=room)
    assert added["member"] == {"id": alice, "info": {"name": "Alice"}}
    assert sorted(u["id"] for u in pusher_client.users_info(room)["users"]) == [alice, "bob"]


def test_presence_via_signin_without_user_info_is_null_info(js: Driver, uid: str) -> None:
    room = f"presence-room-{uid}"
    dave = f"dave-{uid}"
    client = js.client("dave")
    client.signin({"id": dave})

    seen = client.subscribe(room)

    assert seen is not None
    assert seen["members"]["me"] == {"id": dave, "info": None}
    assert seen["members"]["members"] == {dave: None}


def test_presence_without_channel_data_needs_a_sign_in(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """Not signed in: a valid socket_id:channel signature is not enough (401)."""
    room = f"presence-room-{uid}"
    member = js.client("member")
    member.subscribe(room, presence={"user_id": "member", "user_info": {}})
    eve = js.client("eve")
    eve.bind_global()
    assert eve.socket_id is not None
    auth = pusher_client.authenticate(channel=room, socket_id=eve.socket_id)
    assert "channel_data" not in auth

    error = _probe_subscribe(eve, room, auth["auth"])

    assert error["type"] == "AuthError"
    assert error["status"] == 401
    pusher_client.trigger(room, "marker", {})
    member.wait_event(room, "marker")
    assert member.find(type="member_added") == []
    assert pusher_client.users_info(room) == {"users": [{"id": "member"}]}


def test_user_id_outside_the_channel_name_characters(js: Driver, uid: str) -> None:
    """The Node SDK signs and sends to any non-empty id, and pusher-js subscribes to
    ``#server-to-user-{id}`` verbatim: the server accepts such ids (docs/protocol.md §6, §24)."""
    odd = f"Jane Doe:{uid}|é+%"
    client = js.client("odd")
    client.user_bind("hello")

    done = client.signin({"id": odd})

    assert done is not None
    assert done["channel"] == f"#server-to-user-{odd}"
    reply = js.node_sdk("sendToUser", odd, "hello", {"to": odd})
    assert reply == {"status": 200, "body": {}}
    assert client.wait(type="user_event", event="hello")["data"] == {"to": odd}
