"""Querying application state with the PyPI ``pusher`` SDK while pusher-js clients are on.

``channels_info``, ``channel_info``, ``users_info`` (the guide's calls) and
``terminate_user_connections``; each answer is compared with what the pusher-js clients
subscribed. The Python SDK sends ``body_md5`` on GETs too (docs/protocol.md §32.1), so every
successful GET here also proves the server verifies that signature form.
"""

from __future__ import annotations

import pusher
import pytest
from pusher.errors import PusherBadRequest

from tests.support.pusherjs import Driver, JsClient


def _join(js: Driver, name: str, channel: str, user_id: str) -> JsClient:
    client = js.client(name)
    client.subscribe(channel, presence={"user_id": user_id, "user_info": {"name": user_id}})
    return client


def test_channels_info_presence_prefix_with_user_count(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room, lobby, public = f"presence-{uid}-room", f"presence-{uid}-lobby", f"public-{uid}"
    _join(js, "alice", room, "alice")
    _join(js, "alice-tab", room, "alice")  # the same user twice counts once (docs/protocol.md §8)
    _join(js, "bob", room, "bob")
    _join(js, "carol", lobby, "carol")
    js.client("watcher").subscribe(public)

    # The guide's call, literally: every presence channel of the app.
    everything = pusher_client.channels_info("presence-", ["user_count"])
    assert set(everything) == {"channels"}
    assert everything["channels"][room] == {"user_count": 2}
    assert everything["channels"][lobby] == {"user_count": 1}
    assert all(name.startswith("presence-") for name in everything["channels"])

    # Narrowed to this test's channels, the answer is exact.
    mine = pusher_client.channels_info(f"presence-{uid}-", ["user_count"])
    assert mine == {"channels": {room: {"user_count": 2}, lobby: {"user_count": 1}}}

    # Without info, each value is {}; non-presence channels are listed too.
    plain = pusher_client.channels_info()
    assert plain["channels"][public] == {}
    assert plain["channels"][room] == {}


def test_channels_info_with_both_counts_and_no_server_to_user_channels(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-{uid}-both"
    _join(js, "dora", room, "dora")
    _join(js, "dora-tab", room, "dora")
    signed = js.client("signed")
    signed.signin({"id": f"eve-{uid}", "user_info": {}})  # joins #server-to-user-eve-...
    _join(js, "eve", room, f"eve-{uid}")

    both = pusher_client.channels_info(f"presence-{uid}-", ["user_count", "subscription_count"])
    assert both == {"channels": {room: {"user_count": 2, "subscription_count": 3}}}
    counts = pusher_client.channels_info(f"presence-{uid}-", ["subscription_count"])
    assert counts == {"channels": {room: {"subscription_count": 3}}}
    everything = pusher_client.channels_info(None, ["subscription_count"])["channels"]
    assert everything[room] == {"subscription_count": 3}
    assert not [name for name in everything if name.startswith("#")]
    assert not [name for name in pusher_client.channels_info()["channels"] if "#" in name]


def test_a_repeated_listing_follows_every_change(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    prefix = f"poll-{uid}-"
    first = js.client("first")
    first.subscribe(prefix + "a")
    asked = (prefix, ["subscription_count"])
    assert pusher_client.channels_info(*asked) == {
        "channels": {prefix + "a": {"subscription_count": 1}}
    }
    assert pusher_client.channels_info(*asked) == {  # asked again, nothing changed
        "channels": {prefix + "a": {"subscription_count": 1}}
    }
    second = js.client("second")
    second.subscribe(prefix + "a")
    second.subscribe(prefix + "b")
    assert pusher_client.channels_info(*asked) == {
        "channels": {
            prefix + "a": {"subscription_count": 2},
            prefix + "b": {"subscription_count": 1},
        }
    }
    second.unsubscribe(prefix + "b")
    second.subscribe(f"sync-{uid}")  # answered only after the unsubscribe was handled
    assert pusher_client.channels_info(*asked) == {
        "channels": {prefix + "a": {"subscription_count": 2}}
    }


def test_channels_info_lists_only_occupied_channels(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    stay, leave, sync = f"stay-{uid}", f"leave-{uid}", f"sync-{uid}"
    client = js.client("client")
    client.subscribe(stay)
    client.subscribe(leave)
    assert pusher_client.channels_info(f"stay-{uid}")["channels"] == {stay: {}}

    client.unsubscribe(leave)
    # The server handles one connection's frames in order: once this subscribe is
    # answered, the unsubscribe before it has been processed.
    client.subscribe(sync)
    assert pusher_client.channels_info(f"leave-{uid}") == {"channels": {}}
    assert pusher_client.channels_info(f"stay-{uid}") == {"channels": {stay: {}}}


def test_channels_info_user_count_needs_a_presence_prefix(
    pusher_client: pusher.Pusher,
) -> None:
    with pytest.raises(PusherBadRequest):
        pusher_client.channels_info(None, ["user_count"])
    with pytest.raises(PusherBadRequest):
        pusher_client.channels_info("private-", ["user_count"])


def test_channel_info_presence_counts_users_and_subscriptions(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    chatroom = f"presence-chatroom-{uid}"
    _join(js, "alice", chatroom, "alice")
    _join(js, "alice-tab", chatroom, "alice")
    _join(js, "bob", chatroom, "bob")

    # The guide's call.
    assert pusher_client.channel_info(chatroom, ["user_count"]) == {
        "occupied": True,
        "user_count": 2,
    }
    assert pusher_client.channel_info(chatroom, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 3,
    }
    assert pusher_client.channel_info(chatroom) == {"occupied": True}


def test_channel_info_public_subscription_count(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"my-channel-{uid}"
    one = js.client("one")
    one.subscribe(channel)
    js.client("two").subscribe(channel)

    assert pusher_client.channel_info(channel, ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 2,
    }
    # user_count exists only for presence channels.
    with pytest.raises(PusherBadRequest):
        pusher_client.channel_info(channel, ["user_count"])
    # A channel nobody is on.
    assert pusher_client.channel_info(f"nobody-{uid}", ["subscription_count"]) == {
        "occupied": False,
        "subscription_count": 0,
    }


def test_users_info_matches_the_members_pusher_js_sees(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    chatroom = f"presence-chatroom-{uid}"
    _join(js, "alice", chatroom, "alice")
    _join(js, "alice-tab", chatroom, "alice")
    bob = _join(js, "bob", chatroom, "bob")
    carol = js.client("carol")
    seen = carol.subscribe(chatroom, presence={"user_id": "carol", "user_info": None})
    assert seen is not None

    # The guide's call.
    users = pusher_client.users_info(chatroom)

    assert set(users) == {"users"}
    ids = sorted(user["id"] for user in users["users"])
    assert ids == ["alice", "bob", "carol"]  # alice's two sockets count once
    assert ids == sorted(seen["members"]["members"])  # what pusher-js shows carol

    bob.disconnect()
    # Once carol hears of it, the server has removed bob.
    bob_info = {"id": "bob", "info": {"name": "bob"}}
    carol.wait(type="member_removed", channel=chatroom, member=bob_info)
    assert sorted(u["id"] for u in pusher_client.users_info(chatroom)["users"]) == [
        "alice",
        "carol",
    ]


def test_users_info_of_an_empty_presence_channel_and_of_a_public_one(
    pusher_client: pusher.Pusher, uid: str
) -> None:
    assert pusher_client.users_info(f"presence-empty-{uid}") == {"users": []}
    with pytest.raises(PusherBadRequest):
        pusher_client.users_info(f"public-{uid}")


def test_terminate_user_connections_returns_empty_object(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """docs/protocol.md §29: the Python SDK posts to /users/{id}/terminate_connections
    (no /apps/{id})."""
    assert pusher_client.terminate_user_connections(f"nobody-{uid}") == {}

    # It closes connections *signed in* as the user (docs/protocol.md §13). A presence member
    # with that user_id who never signed in is untouched: an event published afterwards still
    # reaches it (a close frame would have arrived first and stopped delivery).
    channel = f"presence-room-{uid}"
    alice = _join(js, "alice", channel, f"alice-{uid}")
    assert pusher_client.terminate_user_connections(f"alice-{uid}") == {}
    pusher_client.trigger(channel, "still-here", {})
    alice.wait_event(channel, "still-here")
    assert alice.find(type="error") == []
    assert alice.inspect()["state"] == "connected"
