"""Presence channels as pusher-js sees them: members, me, member_added/removed
(docs/protocol.md §8).

Presence is per user, not per socket (docs/protocol.md §8): a user's second socket is no
new member, and only the user's last socket leaving removes the member.
"""

from __future__ import annotations

import pusher

from tests.support.pusherjs import Driver, JsClient

ALICE = {"user_id": "alice", "user_info": {"name": "Alice"}}
BOB = {"user_id": "bob", "user_info": {"name": "Bob"}}
CAROL = {"user_id": "carol", "user_info": {"name": "Carol"}}


def _sync(client: JsClient, uid: str) -> None:
    """Return once the server has processed every frame ``client`` sent before this call.

    The server handles one connection's frames in order, so when a fresh subscription is
    answered, everything sent earlier on that socket (an unsubscribe, say) is done.
    """
    client.subscribe(f"sync-{client.name}-{uid}")


def test_members_count_me_and_member_added(js: Driver, uid: str) -> None:
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    bob = js.client("bob")

    first = alice.subscribe(room, presence=ALICE)
    assert first is not None
    assert first["members"]["count"] == 1
    assert first["members"]["me"] == {"id": "alice", "info": {"name": "Alice"}}
    assert first["members"]["members"] == {"alice": {"name": "Alice"}}

    second = bob.subscribe(room, presence=BOB)
    assert second is not None
    assert second["members"]["count"] == 2
    assert second["members"]["me"] == {"id": "bob", "info": {"name": "Bob"}}
    assert second["members"]["members"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}

    added = alice.wait(type="member_added", channel=room)
    assert added["member"] == {"id": "bob", "info": {"name": "Bob"}}
    assert added["count"] == 2
    # The joiner is not told about itself.
    assert bob.find(type="member_added", channel=room) == []


def test_second_socket_of_a_user_is_not_a_new_member(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    bob = js.client("bob")
    alice.subscribe(room, presence=ALICE)
    bob.subscribe(room, presence=BOB)
    alice.wait(type="member_added", channel=room)
    since = js.mark()

    tab = js.client("alice-tab")
    seen = tab.subscribe(room, presence=ALICE)
    assert seen is not None
    assert seen["members"]["count"] == 2
    assert seen["members"]["me"] == {"id": "alice", "info": {"name": "Alice"}}
    assert set(seen["members"]["members"]) == {"alice", "bob"}

    # A genuinely new user afterwards is announced; alice's second socket never was.
    js.client("carol").subscribe(room, presence=CAROL)
    added = bob.wait(type="member_added", channel=room, since=since)
    assert added["member"]["id"] == "carol"
    assert added["count"] == 3
    assert [r["member"]["id"] for r in bob.find(type="member_added", since=since)] == ["carol"]

    assert pusher_client.channel_info(room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 3,
        "subscription_count": 4,
    }


def test_member_removed_only_when_the_users_last_socket_leaves(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    tab = js.client("alice-tab")
    bob = js.client("bob")
    alice.subscribe(room, presence=ALICE)
    tab.subscribe(room, presence=ALICE)
    bob.subscribe(room, presence=BOB)
    since = js.mark()

    # One of alice's two sockets leaves: alice is still present, nobody is told.
    tab.unsubscribe(room)
    _sync(tab, uid)
    pusher_client.trigger(room, "marker-1", {})
    bob.wait_event(room, "marker-1", since=since)
    assert bob.find(type="member_removed", since=since) == []
    assert pusher_client.channel_info(room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 2,
    }

    # Her last socket disconnects: now she is removed, with the info pusher-js kept.
    alice.disconnect()
    removed = bob.wait(type="member_removed", channel=room, since=since)
    assert removed["member"] == {"id": "alice", "info": {"name": "Alice"}}
    assert removed["count"] == 1
    assert pusher_client.users_info(room) == {"users": [{"id": "bob"}]}


def test_unsubscribing_the_last_socket_removes_the_member(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    carol = js.client("carol")
    alice.subscribe(room, presence=ALICE)
    carol.subscribe(room, presence=CAROL)

    carol.unsubscribe(room)

    removed = alice.wait(type="member_removed", channel=room)
    assert removed["member"] == {"id": "carol", "info": {"name": "Carol"}}
    assert removed["count"] == 1
    assert pusher_client.channel_info(room, ["user_count"]) == {
        "occupied": True,
        "user_count": 1,
    }


def test_numeric_user_id_is_normalised_to_a_string(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """channel_data may carry a number as user_id; the server speaks of it as "42"
    (docs/protocol.md §8)."""
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    alice.subscribe(room, presence=ALICE)
    numeric = js.client("numeric")
    seen = numeric.subscribe(room, presence={"user_id": 42, "user_info": {"n": 42}})
    assert seen is not None
    assert seen["members"]["members"]["42"] == {"n": 42}
    assert seen["members"]["me"]["info"] == {"n": 42}

    added = alice.wait(type="member_added", channel=room)
    assert added["member"] == {"id": "42", "info": {"n": 42}}
    assert sorted(u["id"] for u in pusher_client.users_info(room)["users"]) == ["42", "alice"]


def test_member_without_user_info_is_kept_with_null_info(js: Driver, uid: str) -> None:
    """An absent user_info is stored as null; the member must stay in ``hash``
    (docs/protocol.md §8)."""
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    alice.subscribe(room, presence=ALICE)
    anon = js.client("anon")
    seen = anon.subscribe(room, presence={"user_id": "anon"})
    assert seen is not None
    assert seen["members"]["me"] == {"id": "anon", "info": None}
    assert seen["members"]["count"] == 2
    added = alice.wait(type="member_added", channel=room)
    assert added["member"] == {"id": "anon", "info": None}


def test_presence_auth_made_by_the_python_sdk(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """docs/protocol.md §34: the Python SDK writes channel_data with spaces; it is verified
    as received."""
    room = f"presence-room-{uid}"
    client = js.client("py-user")
    assert client.socket_id is not None
    auth = pusher_client.authenticate(
        channel=room,
        socket_id=client.socket_id,
        custom_data={"user_id": "py-user", "user_info": {"name": "Py"}},
    )
    assert ", " in auth["channel_data"] or ": " in auth["channel_data"]  # spaced JSON

    seen = client.subscribe(room, auth_response=auth)

    assert seen is not None
    assert seen["members"]["me"] == {"id": "py-user", "info": {"name": "Py"}}
    assert pusher_client.users_info(room) == {"users": [{"id": "py-user"}]}


def test_presence_bad_auth_is_a_subscription_error_401(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    room = f"presence-room-{uid}"
    alice = js.client("alice")
    alice.subscribe(room, presence=ALICE)
    mallory = js.client("mallory")

    mallory.subscribe(
        room, presence={"user_id": "mallory", "user_info": {}}, secret="wrong-secret", wait=False
    )

    error = mallory.wait(type="subscription_error", channel=room)
    assert error["data"]["status"] == 401
    assert error["data"]["type"] == "AuthError"
    # Not a member: a later event reaches alice with no member_added before it.
    pusher_client.trigger(room, "marker", {})
    alice.wait_event(room, "marker")
    assert alice.find(type="member_added") == []
    assert pusher_client.users_info(room) == {"users": [{"id": "alice"}]}
