"""terminate_connections and watchlists, as signed-in pusher-js clients see them
(docs/protocol.md §13, §14).

Terminating a user closes each of its connections with 4009, which pusher-js treats as
"refused": it ends ``disconnected`` and never reconnects. A watchlist in the sign-in
``user_data`` makes the server tell the user when watched users sign in (their first
connection) and leave (their last); pusher-js emits those on ``pusher.user.watchlist``.
"""

from __future__ import annotations

from collections.abc import Callable

import pusher
import pytest

from tests.support.config import app, build_config
from tests.support.pusherjs import Driver, JsClient
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def _signed_in(js: Driver, name: str, user_id: str, **extra: object) -> JsClient:
    client = js.client(name)
    client.user_bind("marker")
    client.signin({"id": user_id, "user_info": {"name": name}, **extra})
    return client


@pytest.mark.parametrize("sdk", ["python", "node"])
def test_terminate_user_connections_closes_only_that_users_sockets(
    js: Driver, pusher_client: pusher.Pusher, uid: str, sdk: str
) -> None:
    room = f"presence-room-{uid}"
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    stayer = _signed_in(js, "bob", bob, watchlist=[alice])
    stayer.subscribe(room)  # presence via sign-in
    tabs = [_signed_in(js, f"alice-{n}", alice) for n in (1, 2)]
    for tab in tabs:
        tab.subscribe(room)
    added = stayer.wait(type="member_added", channel=room)
    assert added["member"]["id"] == alice
    stayer.wait(type="watchlist", name="online")
    since = js.mark()

    if sdk == "python":
        assert pusher_client.terminate_user_connections(alice) == {}
    else:
        assert js.node_sdk("terminateUserConnections", alice) == {"status": 200, "body": {}}

    for tab in tabs:
        assert tab.wait(type="pusher_error", since=since)["data"]["code"] == 4009
        tab.wait_closed(4009, since=since)
        tab.wait(type="state", current="disconnected", since=since)
        tab.assert_stopped()
        assert tab.find(type="connecting_in", since=since) == []
    removed = stayer.wait(type="member_removed", channel=room, since=since)
    assert removed["member"] == {"id": alice, "info": {"name": "alice-1"}}
    assert removed["count"] == 1

    # Bob is untouched: still connected, still subscribed, still reachable, and told of
    # alice's departure once.
    pusher_client.trigger(room, "after", {})
    stayer.wait_event(room, "after", since=since)
    pusher_client.send_to_user(bob, "marker", {})
    stayer.wait(type="user_event", event="marker", since=since)
    assert len(stayer.find(type="member_removed", since=since)) == 1
    assert stayer.find(type="pusher_error") == []
    assert stayer.inspect()["state"] == "connected"
    assert pusher_client.users_info(room) == {"users": [{"id": bob}]}
    # Alice is signed out with her last socket: bob's watchlist says so, once.
    assert stayer.watchlist(since=since) == [("offline", [alice])]


def test_terminate_is_per_app(js: Driver, server: RunningServer, uid: str) -> None:
    alice = f"alice-{uid}"
    on_app1 = _signed_in(js, "alice-app1", alice)
    on_app2 = js.client("alice-app2", key="other-key", secret="other-secret", app_id="2")
    on_app2.user_bind("marker")
    on_app2.signin({"id": alice})
    app1 = python_sdk(server)
    app2 = python_sdk(server, app_id="2", key="other-key", secret="other-secret")

    app2.terminate_user_connections(alice)

    on_app2.wait_closed(4009)
    on_app2.wait(type="state", current="disconnected")
    _sync(on_app1, app1, alice)
    assert on_app1.inspect()["state"] == "connected"
    assert on_app1.find(type="pusher_error") == []


def test_terminate_targets_signed_in_users_not_presence_ids(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """A presence member id is no sign-in: terminating that id closes nothing."""
    room = f"presence-room-{uid}"
    member_id = f"member-{uid}"
    member = js.client("member")
    member.subscribe(room, presence={"user_id": member_id, "user_info": {}})

    assert pusher_client.terminate_user_connections(member_id) == {}

    pusher_client.trigger(room, "after", {})
    member.wait_event(room, "after")
    assert member.inspect()["state"] == "connected"
    assert member.find(type="pusher_error") == []


# --- watchlists --------------------------------------------------------------------------


def _sync(client: JsClient, pusher_client: pusher.Pusher, user_id: str) -> None:
    """Return once ``client`` has received every frame the server wrote to it so far.

    A server-to-user event written now arrives after anything written to that socket
    earlier, so once it is reported nothing earlier is still on its way.
    """
    since = client.driver.mark()
    pusher_client.send_to_user(user_id, "marker", {})
    client.wait(type="user_event", event="marker", since=since)


def _leave(leaver: JsClient, observer: JsClient, room: str) -> None:
    """Disconnect ``leaver`` and return once the server has processed it.

    Both are in presence channel ``room`` under ids of their own (``sock-{name}``); the
    server signs a closed socket out right after it leaves its channels, so once the
    observer hears of the leaver's ``member_removed`` the sign-out is being done too and
    a later frame to the observer (see :func:`_sync`) comes after anything it caused.
    """
    since = observer.driver.mark()
    leaver.disconnect()
    removed = observer.wait(type="member_removed", channel=room, since=since)
    assert removed["member"]["id"] == f"sock-{leaver.name}"


def _join(client: JsClient, room: str) -> None:
    client.subscribe(room, presence={"user_id": f"sock-{client.name}", "user_info": {}})


def test_watchlist_online_offline_per_user_not_per_socket(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    watcher_id, bob, nobody = f"watcher-{uid}", f"bob-{uid}", f"nobody-{uid}"

    room = f"presence-leaving-{uid}"
    watcher = _signed_in(js, "watcher", watcher_id, watchlist=[bob, nobody])
    _join(watcher, room)

    # Right after sign-in: the status of each watched user (nobody is online).
    watcher.wait(type="watchlist", name="offline")
    assert watcher.watchlist() == [("offline", [bob, nobody])]

    # bob's first connection: online.
    bob1 = _signed_in(js, "bob-1", bob)
    _join(bob1, room)
    online = watcher.wait(type="watchlist", name="online")
    assert online["entry"] == {"name": "online", "user_ids": [bob]}

    # bob's second tab: nothing (he is online already).
    since = js.mark()
    bob2 = _signed_in(js, "bob-2", bob)
    _sync(watcher, pusher_client, watcher_id)
    assert watcher.watchlist(since=since) == []

    # One tab leaves: bob is still online.
    _leave(bob1, watcher, room)
    _sync(watcher, pusher_client, watcher_id)
    assert watcher.watchlist(since=since) == []

    # The last one leaves: offline.
    bob2.disconnect()
    offline = watcher.wait(type="watchlist", name="offline", since=since)
    assert offline["entry"] == {"name": "offline", "user_ids": [bob]}
    _sync(watcher, pusher_client, watcher_id)
    assert watcher.watchlist() == [
        ("offline", [bob, nobody]),
        ("online", [bob]),
        ("offline", [bob]),
    ]


def test_watchlist_initial_status_of_a_user_already_online(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    bob, carol, watcher_id = f"bob-{uid}", f"carol-{uid}", f"watcher-{uid}"
    _signed_in(js, "bob", bob)
    # Carol is connected and a presence member, but not signed in: not online
    # (docs/protocol.md §14).
    js.client("carol").subscribe(
        f"presence-room-{uid}", presence={"user_id": carol, "user_info": {}}
    )

    watcher = _signed_in(js, "watcher", watcher_id, watchlist=[bob, carol])

    _sync(watcher, pusher_client, watcher_id)
    assert sorted(watcher.watchlist()) == [("offline", [carol]), ("online", [bob])]


def test_every_signed_in_socket_of_the_watcher_is_told(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    watcher_id, bob = f"watcher-{uid}", f"bob-{uid}"
    room = f"presence-leaving-{uid}"
    tab1 = _signed_in(js, "watcher-1", watcher_id, watchlist=[bob])
    tab2 = _signed_in(js, "watcher-2", watcher_id, watchlist=[bob])
    _join(tab1, room)
    _join(tab2, room)
    since = js.mark()

    bob_client = _signed_in(js, "bob", bob)
    _join(bob_client, room)
    for tab in (tab1, tab2):
        tab.wait(type="watchlist", name="online", since=since)

    # One of the watcher's tabs leaves; the other still hears of bob.
    _leave(tab1, tab2, room)
    _leave(bob_client, tab2, room)
    tab2.wait(type="watchlist", name="offline", since=since)
    _sync(tab2, pusher_client, watcher_id)
    assert tab2.watchlist(since=since) == [("online", [bob]), ("offline", [bob])]


def test_a_user_without_watchlist_gets_no_watchlist_events(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    bob, plain_id = f"bob-{uid}", f"plain-{uid}"
    room = f"presence-leaving-{uid}"
    plain = _signed_in(js, "plain", plain_id)
    _join(plain, room)
    bob_client = _signed_in(js, "bob", bob)
    _join(bob_client, room)
    _leave(bob_client, plain, room)
    _sync(plain, pusher_client, plain_id)
    assert plain.find(type="watchlist") == []


def test_watchlists_are_per_app(js: Driver, server: RunningServer, uid: str) -> None:
    """The same user id signing in on another app is another user."""
    watcher_id, bob = f"watcher-{uid}", f"bob-{uid}"
    room = f"presence-leaving-{uid}"
    app1 = python_sdk(server)
    watcher = _signed_in(js, "watcher", watcher_id, watchlist=[bob])
    watcher.wait(type="watchlist", name="offline")
    other_app = js.client("bob-app2", key="other-key", secret="other-secret", app_id="2")
    other_app.user_bind("marker")
    other_app.signin({"id": bob})
    other_app.disconnect()
    # bob on app 1 now; his app-2 sign-in and sign-out went unnoticed.
    bob_here = _signed_in(js, "bob", bob)
    online = watcher.wait(type="watchlist", name="online")
    assert online["entry"]["user_ids"] == [bob]
    _join(watcher, room)
    _join(bob_here, room)
    _leave(bob_here, watcher, room)
    watcher.wait_count(2, type="watchlist", name="offline")
    _sync(watcher, app1, watcher_id)
    assert watcher.watchlist() == [("offline", [bob]), ("online", [bob]), ("offline", [bob])]


NO_WATCHLIST_CONFIG = build_config(app(watchlist_events=False))


def test_watchlist_events_off_in_the_app_config(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(NO_WATCHLIST_CONFIG)
    js = make_driver(server)
    sdk = python_sdk(server)
    watcher_id, bob = f"watcher-{uid}", f"bob-{uid}"
    room = f"presence-leaving-{uid}"
    watcher = _signed_in(js, "watcher", watcher_id, watchlist=[bob])
    _join(watcher, room)
    bob_client = _signed_in(js, "bob", bob)
    _join(bob_client, room)
    _leave(bob_client, watcher, room)

    _sync(watcher, sdk, watcher_id)
    assert watcher.find(type="watchlist") == []
