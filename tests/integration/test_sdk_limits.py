"""The HTTP API's limits and validation as the official SDKs meet them (docs/protocol.md §23-§30).

The SDKs check little themselves (the Python SDK's size check is ``sys.getsizeof``, the
Node SDK checks no size at all), so these requests reach the server and the status it
answers is what the application sees. Where a request is refused, pusher-js confirms
that nothing was published.
"""

from __future__ import annotations

import pusher
import pytest
from pusher.errors import PusherBadRequest, PusherBadStatus

from tests.support.pusherjs import Driver

LIMIT = 10 * 1024


def test_event_data_limit_is_10_kib(js: Driver, pusher_client: pusher.Pusher, uid: str) -> None:
    channel = f"my-channel-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    assert pusher_client.trigger(channel, "at-limit", "x" * LIMIT) == {}
    with pytest.raises(PusherBadStatus, match=r"^413"):
        pusher_client.trigger(channel, "over-limit", "x" * (LIMIT + 1))

    assert client.wait_event(channel, "at-limit")["data"] == "x" * LIMIT
    pusher_client.trigger(channel, "marker", {})
    client.wait_event(channel, "marker")
    assert client.events(channel, "over-limit") == []


def test_multibyte_data_is_measured_in_utf8_bytes(pusher_client: pusher.Pusher, uid: str) -> None:
    """3 bytes per character: 3414 characters are 10 242 bytes, over the limit."""
    with pytest.raises(PusherBadStatus, match=r"^413"):
        pusher_client.trigger(f"my-channel-{uid}", "too-big", "\u4e16" * 3414)
    assert pusher_client.trigger(f"my-channel-{uid}", "fits", "\u4e16" * 3413) == {}


def test_oversized_batch_item_is_413_and_nothing_is_published(js: Driver, uid: str) -> None:
    """An invalid item makes the whole batch fail before anything is published
    (docs/protocol.md §25)."""
    channel = f"my-channel-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    reply = js.node_sdk(
        "triggerBatch",
        [
            {"channel": channel, "name": "valid", "data": "small"},
            {"channel": channel, "name": "huge", "data": "x" * (LIMIT + 1)},
        ],
    )

    assert reply["status"] == 413
    js.node_sdk("trigger", channel, "marker", {})
    client.wait_event(channel, "marker")
    assert client.events(channel, "valid") == []
    assert client.events(channel, "huge") == []


def test_batch_of_more_than_ten_events_is_400(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"my-channel-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    ten = [{"channel": channel, "name": f"e{i}", "data": str(i)} for i in range(10)]
    assert pusher_client.trigger_batch(ten) == {}
    eleven = [{"channel": channel, "name": f"x{i}", "data": str(i)} for i in range(11)]
    with pytest.raises(PusherBadRequest):
        pusher_client.trigger_batch(eleven)

    pusher_client.trigger(channel, "marker", {})
    client.wait_event(channel, "marker")
    received = [e["event"] for e in client.events(channel) if not e["event"].startswith("pusher:")]
    assert received == [f"e{i}" for i in range(10)] + ["marker"]


def test_reserved_event_names_are_400(pusher_client: pusher.Pusher, uid: str) -> None:
    for name in ("pusher:fake", "pusher_internal:member_added"):
        with pytest.raises(PusherBadRequest):
            pusher_client.trigger(f"my-channel-{uid}", name, {})


def test_hundred_channels_in_one_trigger(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channels = [f"c{i}-{uid}" for i in range(100)]
    client = js.client("client")
    client.subscribe(channels[-1])

    assert pusher_client.trigger(channels, "wide", {"n": 100}) == {}

    assert client.wait_event(channels[-1], "wide")["data"] == {"n": 100}


def test_channels_info_reports_subscription_count(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    # docs/protocol.md §26 allows only user_count here; issue #2 asks for subscription_count on
    # GET /channels too (soketi always reports it), so Clarion accepts it for any prefix.
    channel = f"counted-{uid}"
    client = js.client("client")
    client.subscribe(channel)
    reply = pusher_client.channels_info(channel, ["subscription_count"])
    assert reply == {"channels": {channel: {"subscription_count": 1}}}
