"""The Node ``pusher`` server SDK (5.3.4) against Clarion, observed by pusher-js.

The Node SDK signs differently from the Python one (no ``body_md5`` on GETs, compact
JSON bodies, ``info`` and ``socket_id`` spread into the body), so its calls are covered
on their own: trigger with ``socket_id`` and ``info``, triggerBatch, the generic ``get``
for the state endpoints, and terminateUserConnections.
"""

from __future__ import annotations

from tests.support.pusherjs import Driver, JsClient


def _member(js: Driver, name: str, channel: str, user_id: str) -> JsClient:
    client = js.client(name)
    client.subscribe(channel, presence={"user_id": user_id, "user_info": {"name": user_id}})
    return client


def test_trigger_returns_empty_object(js: Driver, uid: str) -> None:
    channel = f"my-channel-{uid}"
    client = js.client("client", raw=True)
    client.subscribe(channel)

    reply = js.node_sdk("trigger", channel, "my-event", {"message": "hello world"})

    assert reply == {"status": 200, "body": {}}
    assert client.wait_event(channel, "my-event")["data"] == {"message": "hello world"}
    # Node encodes compactly; the server relays the string untouched.
    assert client.wait_frame("my-event", channel)["data"] == '{"message":"hello world"}'


def test_trigger_with_socket_id_and_info(js: Driver, uid: str) -> None:
    public, presence = f"my-channel-{uid}", f"presence-my-channel-{uid}"
    sender = js.client("sender")
    other = js.client("other")
    sender.subscribe(public)
    other.subscribe(public)
    _member(js, "alice", presence, "alice")
    _member(js, "alice-tab", presence, "alice")
    _member(js, "bob", presence, "bob")
    assert sender.socket_id is not None

    reply = js.node_sdk(
        "trigger",
        [public, presence, f"nobody-{uid}"],
        "my-event",
        {"message": "hello world"},
        {"socket_id": sender.socket_id, "info": "subscription_count,user_count"},
    )

    assert reply["status"] == 200
    assert reply["body"] == {
        "channels": {
            public: {"subscription_count": 2},
            presence: {"user_count": 2, "subscription_count": 3},
            f"nobody-{uid}": {"subscription_count": 0},
        }
    }
    assert other.wait_event(public, "my-event")["data"] == {"message": "hello world"}
    js.node_sdk("trigger", public, "after", "x")
    sender.wait_event(public, "after")
    assert sender.events(public, "my-event") == []


def test_trigger_batch_without_and_with_info(js: Driver, uid: str) -> None:
    one, presence = f"my-channel-{uid}", f"presence-my-channel-{uid}"
    client = js.client("client")
    client.subscribe(one)
    _member(js, "alice", presence, "alice")
    _member(js, "bob", presence, "bob")

    plain = js.node_sdk(
        "triggerBatch",
        [
            {"channel": one, "name": "my-event-1", "data": {"message": "hello world"}},
            {"channel": presence, "name": "my-event-2", "data": {"message": "another"}},
        ],
    )
    assert plain == {"status": 200, "body": {}}
    assert client.wait_event(one, "my-event-1")["data"] == {"message": "hello world"}

    # The guide's batch with info.
    with_info = js.node_sdk(
        "triggerBatch",
        [
            {"channel": one, "name": "event", "data": "test1", "info": "subscription_count"},
            {
                "channel": presence,
                "name": "event",
                "data": "test2",
                "info": "user_count,subscription_count",
            },
            {"channel": one, "name": "event-3", "data": "test3"},
        ],
    )
    assert with_info == {
        "status": 200,
        "body": {
            "batch": [
                {"subscription_count": 1},
                {"user_count": 2, "subscription_count": 2},
                {},
            ]
        },
    }
    assert client.wait_event(one, "event")["data"] == "test1"
    assert client.wait_event(one, "event-3")["data"] == "test3"


def test_get_channels_channel_and_users(js: Driver, uid: str) -> None:
    public, room = f"public-{uid}", f"presence-{uid}-room"
    js.client("watcher").subscribe(public)
    _member(js, "alice", room, "alice")
    _member(js, "alice-tab", room, "alice")
    _member(js, "bob", room, "bob")

    everything = js.node_sdk("get", {"path": "/channels"})
    assert everything["status"] == 200
    assert everything["body"]["channels"][public] == {}
    assert everything["body"]["channels"][room] == {}

    presence = js.node_sdk(
        "get",
        {
            "path": "/channels",
            "params": {"filter_by_prefix": f"presence-{uid}", "info": "user_count"},
        },
    )
    assert presence == {"status": 200, "body": {"channels": {room: {"user_count": 2}}}}

    # A comma in a query value is sent (and signed) unescaped.
    channel = js.node_sdk(
        "get", {"path": f"/channels/{room}", "params": {"info": "user_count,subscription_count"}}
    )
    assert channel == {
        "status": 200,
        "body": {"occupied": True, "user_count": 2, "subscription_count": 3},
    }

    users = js.node_sdk("get", {"path": f"/channels/{room}/users"})
    assert users["status"] == 200
    assert sorted(u["id"] for u in users["body"]["users"]) == ["alice", "bob"]


def test_get_errors_are_request_errors_with_status(js: Driver, uid: str) -> None:
    not_presence = js.node_sdk("get", {"path": f"/channels/public-{uid}/users"})
    assert not_presence["status"] == 400
    assert "error" in not_presence
    bad_secret = js.node_sdk("get", {"path": "/channels"}, secret="not-the-secret")
    assert bad_secret["status"] == 401


def test_terminate_user_connections(js: Driver, uid: str) -> None:
    reply = js.node_sdk("terminateUserConnections", f"user-{uid}")
    assert reply == {"status": 200, "body": {}}
