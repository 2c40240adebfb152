"""A Clarion cluster seen through the official clients: pusher-js on different nodes.

One node driver holds every pusher-js client; each client connects to the node the test
names. Publishes and state queries go through the Python SDK, to any node.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.cluster import RedisServer, api, cluster_config, ready, whole
from tests.support.polling import until
from tests.support.pusherjs import Driver, JsClient
from tests.support.server import RunningServer


def on(js: Driver, name: str, node: RunningServer) -> JsClient:
    """A pusher-js client named ``name`` connected to ``node``."""
    return js.client(name, host=node.host, port=node.port)


def member(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "user_info": {"name": user_id.title()}}


def member_ids(client: JsClient, kind: str, channel: str) -> list[str]:
    """The user ids of the member_added / member_removed events ``client`` saw."""
    return [r["member"]["id"] for r in client.find(type=kind, channel=channel)]


def test_publish_on_one_node_reaches_pusherjs_on_the_others_with_exclusion(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_server)
    a, b, c = make_server(config), make_server(config), make_server(config)
    js = make_driver(a)
    b1, b2, c1 = on(js, "b1", b), on(js, "b2", b), on(js, "c1", c)
    for client in (b1, b2, c1):
        client.subscribe("news")

    api(a).trigger("news", "first", {"n": 1})
    for client in (b1, b2, c1):
        assert client.wait_event("news", "first")["data"] == {"n": 1}

    # Exclude a socket that lives on node b, publishing on node a.
    api(a).trigger("news", "second", {"n": 2}, socket_id=b1.socket_id)
    for client in (b2, c1):
        client.wait_event("news", "second")
    # b delivered "second" to its subscribers at once (b2 has it), so had b1 been sent it,
    # it would have come before "third" on b1's connection.
    api(a).trigger("news", "third", {"n": 3})
    for client in (b1, b2, c1):
        client.wait_event("news", "third")
    assert b1.events("news", "second") == []
    assert [len(client.events("news", "second")) for client in (b2, c1)] == [1, 1]
    assert [r["event"] for r in c1.events("news") if not r["event"].startswith("pusher")] == [
        "first",
        "second",
        "third",
    ]


def test_presence_user_on_two_nodes_is_one_member(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_server)
    a, b, c = make_server(config), make_server(config), make_server(config)
    js = make_driver(a)
    room = "presence-team"
    watcher = on(js, "watcher", c)
    watcher.subscribe(room, presence=member("w"))
    ann_a = on(js, "ann-a", a)
    ann_a.subscribe(room, presence=member("ann"))
    watcher.wait(type="member_added", channel=room, count=2)
    ann_b = on(js, "ann-b", b)
    joined = ann_b.subscribe(room, presence=member("ann"))
    assert joined is not None
    assert joined["members"]["count"] == 2
    assert set(joined["members"]["members"]) == {"w", "ann"}
    # ben joins on b after ann's second tab did: a member_added for that tab would have
    # been published by b (and so reached c) before ben's.
    ben = on(js, "ben", b)
    ben.subscribe(room, presence=member("ben"))
    watcher.wait(type="member_added", channel=room, member={"id": "ben", "info": {"name": "Ben"}})
    assert member_ids(watcher, "member_added", room) == ["ann", "ben"]
    assert watcher.inspect(room)["channel"]["members"]["count"] == 3

    for node in (a, b, c):
        client = api(node)
        users = client.users_info(room)["users"]
        assert sorted(u["id"] for u in users) == ["ann", "ben", "w"], node
        assert client.channel_info(room, ["user_count", "subscription_count"]) == {
            "occupied": True,
            "user_count": 3,
            "subscription_count": 4,
        }
        assert client.channels_info() == {"channels": {room: {}}}
        assert client.channels_info("presence-", ["user_count"]) == {
            "channels": {room: {"user_count": 3}}
        }

    # ann's tab on a goes: ann is still there (her tab on b).
    ann_a.disconnect()
    until(
        lambda: api(c).channel_info(room, ["subscription_count"])["subscription_count"] == 3,
        5,
        "ann's tab on a unsubscribed",
    )
    ann_b.disconnect()
    watcher.wait(type="member_removed", channel=room, member={"id": "ann", "info": {"name": "Ann"}})
    ben.disconnect()
    watcher.wait(type="member_removed", channel=room, member={"id": "ben", "info": {"name": "Ben"}})
    assert member_ids(watcher, "member_removed", room) == ["ann", "ben"]
    assert watcher.inspect(room)["channel"]["members"]["count"] == 1
    for node in (a, b, c):
        assert api(node).users_info(room) == {"users": [{"id": "w"}]}


@pytest.mark.standalone_redis
def test_killed_node_users_leave_once_within_the_lease(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    lease = 2.0
    config = cluster_config(redis_server, lease=lease)
    a, b, c = make_server(config), make_server(config), make_server(config)
    js = make_driver(a)
    room = "presence-z"
    watcher = on(js, "watcher", a)
    watcher.subscribe(room, presence=member("s"))
    on(js, "victim", b).subscribe(room, presence=member("v"))
    # "both" has a tab on the node that dies and one on a survivor: she stays.
    on(js, "both-b", b).subscribe(room, presence=member("both"))
    on(js, "both-c", c).subscribe(room, presence=member("both"))
    watcher.wait(type="member_added", channel=room, count=3)
    assert member_ids(watcher, "member_added", room) == ["v", "both"]

    killed = time.monotonic()
    os.kill(b.process.pid, signal.SIGKILL)
    removed = watcher.wait(type="member_removed", channel=room, timeout=3 * lease)
    elapsed = time.monotonic() - killed
    assert removed["member"] == {"id": "v", "info": {"name": "V"}}
    assert removed["count"] == 2
    # docs/cluster.md (Dead nodes): the first survivor to notice removes the dead node's
    # sockets within the lease (plus a little for the frame to reach pusher-js on a loaded
    # machine).
    assert elapsed < lease + 0.5, f"member_removed {elapsed:.2f} s after the kill"

    # The dead node is gone from the registry: no survivor will clean it up again.
    until(lambda: redis_server.command("ZCARD", "test:nodes") == b":2\r\n", 5, "b deregistered")
    for node in (a, c):
        assert sorted(u["id"] for u in api(node).users_info(room)["users"]) == ["both", "s"]
    # Anything the cleanup sent the watcher came before these (each survivor's own
    # publishes reach it in order).
    api(a).trigger(room, "after-a", {})
    api(c).trigger(room, "after-c", {})
    watcher.wait_event(room, "after-a")
    watcher.wait_event(room, "after-c")
    assert member_ids(watcher, "member_removed", room) == ["v"]
    assert watcher.inspect(room)["channel"]["members"]["count"] == 2


@pytest.mark.standalone_redis
def test_redis_restart_keeps_pusherjs_subscriptions(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    on_a, on_b = on(js, "on-a", a), on(js, "on-b", b)
    for client, user in ((on_a, "ann"), (on_b, "ben")):
        client.subscribe("resilient")
        client.subscribe("presence-r", presence=member(user))
    on_a.wait(type="member_added", channel="presence-r")
    since = js.mark()

    redis_server.kill()
    until(lambda: ready(a) == 503 and ready(b) == 503, 10, "both nodes not ready")
    redis_server.start()  # empty: the nodes must register everything again
    until(lambda: whole(a) and whole(b), 15, "both nodes back, each seeing the other")

    api(a).trigger("resilient", "after", {"n": 1})
    assert on_b.wait_event("resilient", "after", since=since)["data"] == {"n": 1}
    on_a.wait_event("resilient", "after", since=since)
    api(b).trigger("presence-r", "after", {})
    for client in (on_a, on_b):
        client.wait_event("presence-r", "after", since=since)
    # Neither client noticed anything: same connection, no re-subscription, no members
    # coming or going.
    for client in (on_a, on_b):
        assert client.find(since=since, type="state") == []
        assert client.find(since=since, type="subscription_succeeded") == []
        assert client.find(since=since, type="member_removed") == []
        assert client.find(since=since, type="member_added") == []
        assert client.inspect()["socket_id"] == client.socket_id
    for node in (a, b):
        client = api(node)
        assert client.channel_info("resilient", ["subscription_count"])["subscription_count"] == 2
        users = client.users_info("presence-r")["users"]
        assert sorted(u["id"] for u in users) == ["ann", "ben"]


@pytest.mark.parametrize(
    "channel",
    [
        "news",
        "private-news",
        "presence-news",
    ],
)
def test_node_relays_to_its_remaining_subscribers_after_one_leaves(
    channel: str,
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    stays, goes = on(js, "stays", b), on(js, "goes", b)
    stays.subscribe(channel, presence=member("s") if channel.startswith("presence-") else None)
    goes.subscribe(channel, presence=member("g") if channel.startswith("presence-") else None)
    api(a).trigger(channel, "before", {})
    stays.wait_event(channel, "before")

    goes.unsubscribe(channel)
    until(
        lambda: api(a).channel_info(channel, ["subscription_count"])["subscription_count"] == 1,
        5,
        "the unsubscribe reached the cluster state",
    )
    # Published on the other node: it reaches b only if b still listens on Redis.
    api(a).trigger(channel, "after", {"n": 1})
    got = stays.wait(timeout=2.5, type="event", channel=channel, event="after")
    assert got["data"] == {"n": 1}


@pytest.mark.parametrize(
    "channel",
    [
        "news",
        "private-news",
        "presence-news",
    ],
)
@pytest.mark.standalone_redis
def test_node_stops_listening_when_its_last_subscriber_leaves(
    channel: str,
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """docs/cluster.md (What works across nodes): each node subscribes (on Redis) only to
    the channels it has subscribers for."""
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    named = f"{channel}-{time.monotonic_ns()}"
    client = on(js, "client", b)
    client.subscribe(named, presence=member("c") if channel.startswith("presence-") else None)

    def listening() -> bool:
        return named.encode() in redis_server.command("PUBSUB", "CHANNELS")

    assert listening()
    client.unsubscribe(named)
    until(lambda: api(a).channels_info()["channels"] == {}, 5, "the channel vacated")
    until(lambda: not listening(), 2.5, "node b unsubscribed from the channel on Redis")


def test_subscription_count_events_keep_one_interval_for_the_cluster(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """Counts change on two nodes; the event still goes out once per 5 s for the cluster
    (the node whose turn it is sends the cluster-wide count), not once per node. Waits
    out one interval (about 5 s)."""
    config = cluster_config(redis_server, subscription_count_events=True)
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    channel = "counted"
    first = on(js, "first", a)
    first.subscribe(channel)
    one = first.wait(type="event", channel=channel, event="pusher:subscription_count")
    first_at = time.monotonic()
    assert one["data"] == {"subscription_count": 1}

    since = js.mark()
    second = on(js, "second", b)  # a change on the other node, within the interval
    second.subscribe(channel)
    two = first.wait(
        type="event", channel=channel, event="pusher:subscription_count", since=since, timeout=9
    )
    assert two["data"] == {"subscription_count": 2}
    assert time.monotonic() - first_at > 4.0  # not b's own prompt event
    seen_by_second = second.wait(type="event", channel=channel, event="pusher:subscription_count")
    assert seen_by_second["data"] == {"subscription_count": 2}
