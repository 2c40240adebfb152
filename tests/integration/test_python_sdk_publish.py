"""Publishing with the PyPI ``pusher`` SDK, observed by real pusher-js clients.

Every publishing call of the HTTP API guide's Python examples (``trigger`` to one and to
three channels, ``trigger`` with ``socket_id``, ``trigger_batch``) is made as the guide
writes it, against a running Clarion; ``trigger_batch`` items with ``info`` (which the SDK
passes through) are covered too.
pusher 3.3.4's ``trigger()`` takes no ``info`` argument (the guide shows ``info`` on
trigger only for PHP, Node and Go), so trigger-with-info is covered in test_node_sdk.py.
"""

from __future__ import annotations

import json

import pusher

from tests.support.pusherjs import Driver


def test_trigger_one_channel_reaches_subscriber_as_the_sdk_encoded_it(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"my-channel-{uid}"
    alice = js.client("alice", raw=True)
    alice.subscribe(channel)
    alice.bind(channel, "my-event")

    reply = pusher_client.trigger(channel, "my-event", {"some": "data"})

    assert reply == {}  # docs/protocol.md §22: a JSON body, or the SDK would have raised
    event = alice.wait_event(channel, "my-event")
    assert event["data"] == {"some": "data"}
    # docs/protocol.md §3, §11: data travels as a string, exactly as the SDK encoded it.
    frame = alice.wait_frame("my-event", channel)
    assert frame == {"event": "my-event", "channel": channel, "data": json.dumps({"some": "data"})}
    assert frame["data"] == '{"some": "data"}'  # the Python SDK's spaced separators, untouched
    # Server-published events carry no user_id, so pusher-js passes empty metadata
    # (docs/protocol.md §11).
    bound = alice.wait(type="bound", channel=channel, event="my-event")
    assert bound["data"] == {"some": "data"}
    assert bound["metadata"] == {}


def test_trigger_to_three_channels_reaches_each_subscriber(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channels = [f"my-channel-1-{uid}", f"my-channel-2-{uid}", f"my-channel-3-{uid}"]
    clients = [js.client(f"c{i}") for i in range(3)]
    for client, channel in zip(clients, channels, strict=True):
        client.subscribe(channel)
    # One connection on two of the channels gets one frame per channel (docs/protocol.md §11).
    both = js.client("both")
    both.subscribe(channels[0])
    both.subscribe(channels[2])

    reply = pusher_client.trigger(channels, "my-event", {"some": "data"})

    assert reply == {}
    for client, channel in zip(clients, channels, strict=True):
        assert client.wait_event(channel, "my-event")["data"] == {"some": "data"}
    assert both.wait_event(channels[0], "my-event")["data"] == {"some": "data"}
    assert both.wait_event(channels[2], "my-event")["data"] == {"some": "data"}
    # Nothing for channel 2 reached `both`: prove it with a later event on a channel it has.
    pusher_client.trigger(channels[2], "marker", {})
    both.wait_event(channels[2], "marker")
    assert [e["channel"] for e in both.find(type="event", event="my-event")] == [
        channels[0],
        channels[2],
    ]


def test_trigger_with_socket_id_excludes_that_connection_only(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"my-channel-{uid}"
    sender = js.client("sender")
    other = js.client("other")
    sender.subscribe(channel)
    other.subscribe(channel)
    assert sender.socket_id is not None

    reply = pusher_client.trigger(channel, "my-event", {"some": "data"}, sender.socket_id)

    assert reply == {}
    assert other.wait_event(channel, "my-event")["data"] == {"some": "data"}
    # A later event on the same channel reaches the sender; the excluded one came before it.
    pusher_client.trigger(channel, "after", {"n": 2})
    sender.wait_event(channel, "after")
    assert sender.events(channel, "my-event") == []
    other.wait_event(channel, "after")


def test_data_that_is_not_json_and_non_ascii_data_are_delivered_verbatim(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """The Python SDK escapes non-ASCII in the body (docs/protocol.md §22); data must survive."""
    channel = f"my-channel-{uid}"
    alice = js.client("alice", raw=True)
    alice.subscribe(channel)
    payload = {"emoji": "\U0001f600", "text": "h\u00e9llo \u4e16\u754c"}

    pusher_client.trigger(channel, "plain-event", "just text, not JSON")
    pusher_client.trigger(channel, "unicode-event", payload)

    assert alice.wait_event(channel, "plain-event")["data"] == "just text, not JSON"
    assert alice.wait_frame("plain-event", channel)["data"] == "just text, not JSON"
    assert alice.wait_event(channel, "unicode-event")["data"] == payload
    # The SDK's data string (ensure_ascii=False), byte for byte.
    assert alice.wait_frame("unicode-event", channel)["data"] == json.dumps(
        payload, ensure_ascii=False
    )


def test_trigger_batch_as_in_the_guide(js: Driver, pusher_client: pusher.Pusher, uid: str) -> None:
    one, two = f"my-channel-1-{uid}", f"my-channel-2-{uid}"
    first = js.client("first")
    second = js.client("second")
    both = js.client("both")
    first.subscribe(one)
    second.subscribe(two)
    both.subscribe(one)
    both.subscribe(two)

    # The guide's call, socket_id '1234.12' (nobody's socket) included.
    reply = pusher_client.trigger_batch(
        [
            {
                "channel": one,
                "name": "my-event-1",
                "data": {"some": "data"},
                "socket_id": "1234.12",
            },
            {"channel": two, "name": "my-event-2", "data": {"some": "other data"}},
        ]
    )

    assert reply == {}
    assert first.wait_event(one, "my-event-1")["data"] == {"some": "data"}
    assert second.wait_event(two, "my-event-2")["data"] == {"some": "other data"}
    # Delivered in array order (docs/protocol.md §25).
    both.wait_event(two, "my-event-2")
    received = [
        (e["channel"], e["event"])
        for e in both.find(type="event")
        if e["event"].startswith("my-event")
    ]
    assert received == [(one, "my-event-1"), (two, "my-event-2")]


def test_trigger_batch_socket_id_excludes_per_item(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"my-channel-{uid}"
    sender = js.client("sender")
    other = js.client("other")
    sender.subscribe(channel)
    other.subscribe(channel)

    pusher_client.trigger_batch(
        [
            {"channel": channel, "name": "excluded", "data": "x", "socket_id": sender.socket_id},
            {"channel": channel, "name": "for-all", "data": "y"},
        ]
    )

    assert other.wait_event(channel, "excluded")["data"] == "x"
    sender.wait_event(channel, "for-all")
    assert sender.events(channel, "excluded") == []


def test_trigger_batch_with_info_is_aligned_with_the_request(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """The Python SDK passes an item's ``info`` through (docs/protocol.md §25)."""
    public, presence, quiet = f"my-channel-{uid}", f"presence-my-channel-{uid}", f"quiet-{uid}"
    for name in ("p1", "p2"):
        js.client(name).subscribe(public)
    alice = js.client("alice")
    alice_tab = js.client("alice-tab")
    bob = js.client("bob")
    alice.subscribe(presence, presence={"user_id": "alice", "user_info": {"name": "Alice"}})
    alice_tab.subscribe(presence, presence={"user_id": "alice", "user_info": {"name": "Alice"}})
    bob.subscribe(presence, presence={"user_id": "bob", "user_info": {"name": "Bob"}})

    reply = pusher_client.trigger_batch(
        [
            {"channel": public, "name": "event", "data": "test1", "info": "subscription_count"},
            {
                "channel": presence,
                "name": "event",
                "data": "test2",
                "info": "user_count,subscription_count",
            },
            {"channel": quiet, "name": "event", "data": "test3"},
        ]
    )

    assert reply == {
        "batch": [
            {"subscription_count": 2},
            {"user_count": 2, "subscription_count": 3},
            {},
        ]
    }
    assert bob.wait_event(presence, "event")["data"] == "test2"


def test_trigger_to_a_channel_nobody_is_on_is_fine(pusher_client: pusher.Pusher, uid: str) -> None:
    assert pusher_client.trigger(f"empty-{uid}", "my-event", {"some": "data"}) == {}
