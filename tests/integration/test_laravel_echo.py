"""Laravel Echo 2.5.0 (broadcaster ``pusher``) against Clarion, unchanged.

Echo builds its pusher-js client from the options an application gives it (wsHost,
wsPort, forceTLS, enabledTransports, cluster and a channel authoriser); the events are
published the way a Laravel backend does, through the Python SDK's HTTP API.
"""

from __future__ import annotations

import pusher

from tests.support.pusherjs import Driver


def test_private_listen_receives_broadcasts_with_echo_event_names(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    shop = js.echo("shop")
    other = js.echo("other")
    name = f"orders-{uid}"
    orders = shop.private(name).call(
        ("listen", ".OrderShipped"),  # a leading "." : the event name as is
        ("listen", "OrderShipped"),  # no ".": Echo adds its namespace, App.Events
    )
    orders.wait_subscribed()
    others = other.private(name).listen(".OrderShipped")
    others.wait_subscribed()
    assert orders.pusher_name == f"private-{name}"

    pusher_client.trigger(f"private-{name}", "OrderShipped", {"id": 1})
    got = orders.wait("listen", event=".OrderShipped")
    assert got["data"] == {"id": 1}
    # What Laravel sends for an event class without broadcastAs: its full class name.
    pusher_client.trigger(f"private-{name}", "App\\Events\\OrderShipped", {"id": 2})
    namespaced = orders.wait("listen", event="OrderShipped")
    assert namespaced["data"] == {"id": 2}
    others.wait("listen", event=".OrderShipped")

    # broadcast(...)->toOthers(): the X-Socket-Id Echo sends becomes socket_id.
    socket_id = shop.echo_socket_id()
    assert socket_id == shop.socket_id
    mark = js.mark()
    pusher_client.trigger(f"private-{name}", "OrderShipped", {"id": 3}, socket_id=socket_id)
    others.wait("listen", since=mark, event=".OrderShipped", data={"id": 3})
    # Events of one connection arrive in order: once 4 is in, 3 would have been too.
    pusher_client.trigger(f"private-{name}", "OrderShipped", {"id": 4})
    for channel in (orders, others):
        channel.wait("listen", event=".OrderShipped", data={"id": 4})
    for client, channel in ((shop, orders), (other, others)):
        ids = [r["data"]["id"] for r in channel.reports("listen", event=".OrderShipped")]
        assert ids == ([1, 4] if client is shop else [1, 3, 4])
    # Each listener got only its own event name.
    assert [r["data"]["id"] for r in orders.reports("listen", event="OrderShipped")] == [2]


def test_join_here_joining_leaving(js: Driver, uid: str) -> None:
    name = f"chat-{uid}"
    alice_info = {"id": 1, "name": "Alice"}
    bob_info = {"id": 2, "name": "Bob"}
    alice = js.echo("alice")
    bob = js.echo("bob")

    room_a = alice.join(name, {"user_id": "1", "user_info": alice_info})
    room_a.call("here", "joining", "leaving")
    assert room_a.wait("here")["members"] == [alice_info]
    assert room_a.pusher_name == f"presence-{name}"

    room_b = bob.join(name, {"user_id": "2", "user_info": bob_info})
    room_b.call("here", "joining", "leaving")
    here = room_b.wait("here")["members"]
    assert sorted(here, key=lambda m: m["id"]) == [alice_info, bob_info]
    assert room_a.wait("joining")["member"] == bob_info
    assert alice.inspect(f"presence-{name}")["channel"]["members"]["count"] == 2

    bob.leave(name)
    assert room_a.wait("leaving")["member"] == bob_info
    assert alice.inspect(f"presence-{name}")["channel"]["members"]["count"] == 1
    # Bob saw nobody join or leave: only himself arrived, after Alice.
    assert room_b.reports("joining") == [] and room_b.reports("leaving") == []
    assert len(room_a.reports("here")) == 1 and len(room_a.reports("joining")) == 1


def test_whisper_reaches_the_others_but_not_the_sender(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    name = f"chat-{uid}"
    alice = js.echo("alice")
    bob = js.echo("bob")
    carol = js.echo("carol")
    channels = {}
    for client in (alice, bob, carol):
        channel = client.private(name).call(("listenForWhisper", "typing"), ("listen", ".done"))
        channel.wait_subscribed()
        channels[client.name] = channel

    channels["alice"].whisper("typing", {"name": "alice", "typing": True})
    for receiver in ("bob", "carol"):
        got = channels[receiver].wait("listenForWhisper", event="typing")
        assert got["data"] == {"name": "alice", "typing": True}
    # Once the server has sent everything it would for the whisper, a later event marks
    # the end: anything the whisper caused reached alice before "done" did.
    pusher_client.trigger(f"private-{name}", "done", {})
    for channel in channels.values():
        channel.wait("listen", event=".done")
    assert channels["alice"].reports("listenForWhisper") == []
    assert [len(channels[c].reports("listenForWhisper")) for c in ("bob", "carol")] == [1, 1]


def test_whisper_on_a_presence_channel(js: Driver, pusher_client: pusher.Pusher, uid: str) -> None:
    name = f"room-{uid}"
    alice = js.echo("alice")
    bob = js.echo("bob")
    room_a = alice.join(name, {"user_id": "a", "user_info": {"name": "Alice"}})
    room_a.call("here", ("listenForWhisper", "typing"), ("listen", ".done"))
    room_a.wait("here")
    room_b = bob.join(name, {"user_id": "b", "user_info": {"name": "Bob"}})
    room_b.call("here", ("listenForWhisper", "typing"))
    room_b.wait("here")

    room_b.whisper("typing", {"who": "b"})
    assert room_a.wait("listenForWhisper", event="typing")["data"] == {"who": "b"}
    room_a.whisper("typing", {"who": "a"})
    assert room_b.wait("listenForWhisper", event="typing")["data"] == {"who": "a"}
    pusher_client.trigger(f"presence-{name}", "done", {})
    room_a.wait("listen", event=".done")
    assert [r["data"] for r in room_a.reports("listenForWhisper")] == [{"who": "b"}]
