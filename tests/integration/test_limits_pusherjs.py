"""Per-app and per-server limits as the official clients meet them (docs/protocol.md §10, §18, §19).

Each test starts a server of its own with the limit under test, so nothing else
counts against it. (test_connection.py covers ``max_connections`` → 4004 too, and a
freed slot letting a new client in.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pusher.errors import PusherBadStatus

from tests.support.config import app, build_config
from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def test_app_connection_quota_closes_the_extra_socket_with_4004(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    server = make_server(build_config(app(max_connections=1)))
    js = make_driver(server)
    first = js.client("first")
    first.signin({"id": "first"})
    extra_js = make_driver(server)

    extra = extra_js.client("extra", wait=False)

    extra.wait_closed(4004)
    assert extra_js.wait_for({"type": "ws_close"})["code"] == 4004
    extra.wait(type="state", current="disconnected")
    extra.assert_stopped()
    assert extra.find(type="connected") == []
    assert extra.find(type="connecting_in") == []
    assert first.inspect()["state"] == "connected"


def test_connections_per_ip_over_the_cap_get_4100_and_retry_after_a_second(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    server = make_server(build_config(app(), server={"max_connections_per_ip": 2}))
    js = make_driver(server)
    first, second = js.client("first"), js.client("second")
    # The extra client in a driver of its own, so every socket close it reports is its own.
    extra_js = make_driver(server)

    extra = extra_js.client("extra", wait=False)

    # The server answered the handshake with pusher:error 4100 and closed the socket with
    # 4100; pusher-js backs off for a second (4100-4199) instead of giving up.
    extra.wait_closed(4100)
    assert extra_js.wait_for({"type": "ws_close"})["code"] == 4100
    assert extra.wait(type="connecting_in")["delay"] == 1
    assert extra.find(type="connected") == []
    assert extra.inspect()["state"] == "connecting"
    assert first.inspect()["state"] == "connected"
    assert second.inspect()["state"] == "connected"

    # Once a slot is free, pusher-js's own retry gets in.
    first.disconnect()
    extra.wait(type="connected", timeout=5)
    assert extra.inspect()["state"] == "connected"


def test_presence_channel_member_limit(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(build_config(app(max_presence_members=2)))
    js = make_driver(server)
    sdk = python_sdk(server)
    room = f"presence-room-{uid}"
    alice, bob = js.client("alice"), js.client("bob")
    alice.subscribe(room, presence={"user_id": "alice", "user_info": {}})
    bob.subscribe(room, presence={"user_id": "bob", "user_info": {}})

    carol = js.client("carol")
    carol.subscribe(room, presence={"user_id": "carol", "user_info": {}}, wait=False)

    error = carol.wait(type="subscription_error", channel=room)
    assert error["data"]["type"] == "LimitReached"
    assert error["data"]["status"] == 4100  # the table in docs/protocol.md §10
    assert carol.inspect(room)["channel"]["subscribed"] is False
    # A second socket of a member is no new member: still let in.
    tab = js.client("alice-tab")
    seen = tab.subscribe(room, presence={"user_id": "alice", "user_info": {}})
    assert seen is not None
    assert seen["members"]["count"] == 2
    # Nobody heard of carol, and she is not in the channel.
    sdk.trigger(room, "marker", {})
    alice.wait_event(room, "marker")
    assert [r["member"]["id"] for r in alice.find(type="member_added")] == ["bob"]
    assert sorted(u["id"] for u in sdk.users_info(room)["users"]) == ["alice", "bob"]
    assert carol.inspect()["state"] == "connected"


def test_channels_per_connection_limit(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(build_config(app(max_channels_per_connection=2)))
    js = make_driver(server)
    sdk = python_sdk(server)
    one, two, three, four = (f"ch{n}-{uid}" for n in range(1, 5))
    client = js.client("client")
    client.subscribe(one)
    client.subscribe(two)

    client.subscribe(three, wait=False)

    error = client.wait(type="subscription_error", channel=three)
    assert error["data"]["type"] == "LimitReached"
    assert sdk.channel_info(three, ["subscription_count"]) == {
        "occupied": False,
        "subscription_count": 0,
    }
    # Leaving one makes room again (pusher-js keeps the refused channel pending, so a
    # fresh name is used).
    client.unsubscribe(one)
    client.subscribe(four)
    sdk.trigger(four, "fits", {})
    client.wait_event(four, "fits")
    assert client.inspect()["state"] == "connected"


def _retry_until_accepted(call: Callable[[], object], timeout: float = 5.0) -> int:
    """Call until it is not refused with 429 (the bucket refills); return the refusals."""
    refused = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return refused
        except PusherBadStatus as exc:
            if not str(exc).startswith("429") or time.monotonic() > deadline:
                raise
            refused += 1
            time.sleep(0.05)


def test_backend_events_per_second(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(build_config(app(max_backend_events_per_second=5)))
    js = make_driver(server)
    sdk = python_sdk(server)
    channel = f"limited-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    accepted, refused = [], []
    for n in range(8):
        try:
            sdk.trigger(channel, f"e{n}", {"n": n})
            accepted.append(f"e{n}")
        except PusherBadStatus as exc:
            assert str(exc).startswith("429")
            refused.append(f"e{n}")

    # A bucket of 5, refilled at 5 per second: the first five pass, then 429s.
    assert accepted[:5] == [f"e{n}" for n in range(5)]
    assert refused
    _retry_until_accepted(lambda: sdk.trigger(channel, "marker", {}))
    client.wait_event(channel, "marker")
    received = [e["event"] for e in client.events(channel) if not e["event"].startswith("pusher")]
    assert received == [*accepted, "marker"]


def test_each_channel_of_a_trigger_counts_once(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(build_config(app(max_backend_events_per_second=5)))
    js = make_driver(server)
    sdk = python_sdk(server)
    channel = f"limited-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    # Five channels in one request take the whole bucket; the next event is refused.
    sdk.trigger([channel, *(f"other{n}-{uid}" for n in range(4))], "wide", {})
    with pytest.raises(PusherBadStatus, match=r"^429"):
        sdk.trigger(channel, "over", {})

    _retry_until_accepted(lambda: sdk.trigger(channel, "marker", {}))
    client.wait_event(channel, "marker")
    received = [e["event"] for e in client.events(channel) if not e["event"].startswith("pusher")]
    assert received == ["wide", "marker"]


def test_read_requests_per_second(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(build_config(app(max_read_requests_per_second=3)))
    js = make_driver(server)
    sdk = python_sdk(server)
    channel = f"read-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    for _ in range(3):
        assert sdk.channel_info(channel, ["subscription_count"])["subscription_count"] == 1
    with pytest.raises(PusherBadStatus, match=r"^429"):
        sdk.channels_info()
    node = js.node_sdk("get", {"path": f"/channels/{channel}"})
    assert node["status"] == 429

    # Publishing is not a read: it still goes through, and reaches pusher-js.
    assert sdk.trigger(channel, "still-allowed", {}) == {}
    client.wait_event(channel, "still-allowed")
    # The bucket refills.
    answers: list[object] = []
    _retry_until_accepted(lambda: answers.append(sdk.channel_info(channel)))
    assert answers == [{"occupied": True}]
