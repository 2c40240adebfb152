"""Nodes on a Redis Sentinel deployment: they find the master through the sentinels and
follow a failover (a kill -9 of the master) with the guarantees of an outage: no publish
answered 200 and lost, deliveries back within 15 s, every node's state registered again
on the new master, no subscription lost, dead nodes reaped."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest

from tests.cluster.test_cluster_pusherjs import member, on
from tests.support.cluster import RedisServer, api, cluster_config, whole
from tests.support.polling import until
from tests.support.pusherjs import Driver, JsClient
from tests.support.sentinel import SentinelTopology
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

LEASE = 3.0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelTopology]:
    topology = SentinelTopology(tmp_path)
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


def hooks(receiver: Receiver) -> list[dict[str, Any]]:
    return [{"url": f"{receiver.url}/hooks", "event_types": ["member_added", "member_removed"]}]


def members(receiver: Receiver, name: str) -> list[str]:
    return [e["user_id"] for e in receiver.events() if e["name"] == name]


class Publisher(threading.Thread):
    """Publishes numbered events on ``channel`` through the SDK, alternating between the
    nodes, and keeps each one's answer: 200 (``ok``) or the status it failed with."""

    def __init__(self, nodes: list[RunningServer], channel: str) -> None:
        super().__init__(daemon=True)
        self.clients = [api(node) for node in nodes]
        self.channel = channel
        self.ok: dict[int, float] = {}  # index -> when its 200 came
        self.failed: dict[int, str] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                self.clients[index % len(self.clients)].trigger(self.channel, "tick", index)
            except pusher.errors.PusherBadStatus as exc:
                self.failed[index] = str(exc)
            else:
                self.ok[index] = time.monotonic()
            index += 1
            time.sleep(0.02)

    def back_after(self, since: float, within: float = 15) -> float:
        """When publishes were answered 200 again after ``since`` (the master's death);
        waits for 20 more, then stops publishing."""

        def after() -> list[float]:
            return [at for at in self.ok.values() if at > since + 0.5]

        until(lambda: after(), within, "a publish answered 200 after the failover")
        back = min(after())
        until(lambda: len([at for at in self.ok.values() if at > back]) >= 20, 10, "more")
        self.stopping.set()
        self.join(5)
        assert all("503" in why for why in self.failed.values()), self.failed
        return back

    def check_delivered(self, clients: list[JsClient], since: float) -> None:
        """Every publish answered 200 reached every client (a 503 may or may not)."""
        for client in clients:
            with contextlib.suppress(AssertionError):
                until(lambda client=client: set(self.ok) <= ticks(client), 10, "all")
            lost = sorted(set(self.ok) - ticks(client))
            # Which were lost, and how long after ``since`` their 200 came.
            assert not lost, (client, [(i, round(self.ok[i] - since, 2)) for i in lost])


def subscribers(redis: RedisServer) -> set[str]:
    """The nodes subscribed on ``redis`` (their pub/sub connections), by name."""
    found = (
        re.search(r"name=(clarion-\S+) .*flags=P", line)
        for line in redis.command("CLIENT", "LIST").decode().splitlines()
    )
    return {match[1] for match in found if match}


def ticks(client: JsClient) -> set[int]:
    """The numbers of the publisher's events ``client`` received."""
    return {int(r["data"]) for r in client.events("feed", "tick")}


def test_nodes_follow_a_failover_without_a_lost_publish(
    sentinel: SentinelTopology,
    receiver: Receiver,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(sentinel, lease=LEASE, webhooks=hooks(receiver))
    a, b, c = make_server(config), make_server(config), make_server(config)
    js = make_driver(a)
    on_a, on_b, on_c = on(js, "on-a", a), on(js, "on-b", b), on(js, "on-c", c)
    for client, user in ((on_a, "ann"), (on_b, "ben"), (on_c, "cid")):
        client.subscribe("feed")
        client.subscribe("presence-room", presence=member(user))
    # Through Sentinel as on one Redis: members seen across nodes, webhooks once each.
    until(lambda: len(on_a.find(type="member_added", channel="presence-room")) == 2, 10, "members")
    receiver.wait_for(lambda _: sorted(members(receiver, "member_added")) == ["ann", "ben", "cid"])
    api(b).trigger("feed", "hello", {"n": 0})
    for client in (on_a, on_b, on_c):
        assert client.wait_event("feed", "hello")["data"] == {"n": 0}

    publisher = Publisher([a, b], "feed")
    publisher.start()
    until(lambda: len(publisher.ok) >= 10, 10, "publishes before the failover")
    old_port = sentinel.kill_master()
    killed = time.monotonic()
    c.process.kill()  # a node dying during the failover
    sentinel.wait_failover(old_port)

    back = publisher.back_after(killed)
    assert back - killed < 15, f"publishes flowed again {back - killed:.1f} s after"
    assert publisher.failed, "no publish answered 503 while the master was gone"
    publisher.check_delivered([on_a, on_b], killed)

    # The nodes registered their state again on the new master: subscriptions, presence.
    for node in (a, b):
        until(lambda node=node: whole(node), 10, "node whole")
    until(lambda: len(on_a.find(type="member_removed", channel="presence-room")) == 1, 10, "cid")
    assert [r["member"]["id"] for r in on_a.find(type="member_removed")] == ["cid"]
    for node in (a, b):
        info = api(node).channel_info("feed", ["subscription_count"])
        assert info["subscription_count"] == 2
        users = api(node).users_info("presence-room")["users"]
        assert sorted(u["id"] for u in users) == ["ann", "ben"]
    assert sentinel.command("HGET", "test:usercount:1", "presence-room").endswith(b"2\r\n")
    receiver.wait_for(lambda _: members(receiver, "member_removed") == ["cid"])
    # No client noticed the failover: same connection, no re-subscription.
    for client in (on_a, on_b):
        assert client.find(type="subscription_succeeded", channel="feed")[1:] == []

    # A node dying after the failover is reaped from the new master too.
    b.process.kill()
    receiver.wait_for(lambda _: sorted(members(receiver, "member_removed")) == ["ben", "cid"])
    until(lambda: api(a).channel_info("feed", ["subscription_count"])["subscription_count"] == 1)


def test_a_manual_failover_moves_every_node_off_the_demoted_master(
    sentinel: SentinelTopology,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """SENTINEL FAILOVER: the old master stays up, still a master for seconds, then a
    replica. A node whose connections stayed on it, or moved one by one, would answer
    200 for publishes the nodes on the other master never see."""
    config = cluster_config(sentinel, lease=LEASE)
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    on_a, on_b = on(js, "on-a", a), on(js, "on-b", b)
    for client, user in ((on_a, "ann"), (on_b, "ben")):
        client.subscribe("feed")
        client.subscribe("presence-room", presence=member(user))
    until(lambda: len(on_a.find(type="member_added", channel="presence-room")) == 1, 10, "ben")
    old = sentinel.master
    publisher = Publisher([a, b], "feed")
    publisher.start()
    until(lambda: len(publisher.ok) >= 10, 10, "publishes before the failover")
    started = time.monotonic()
    assert sentinel.sentinels[0].command("SENTINEL", "FAILOVER", "mymaster") == b"+OK\r\n"
    new = sentinel.wait_failover(old.port)
    publisher.back_after(started)
    publisher.check_delivered([on_a, on_b], started)
    # Both nodes moved to the new master by themselves: the sentinels demote the old one
    # (and close its clients) only seconds later, and until then it takes writes.
    until(lambda: b"clarion-" not in old.command("CLIENT", "LIST"), 10, "off the old master")
    until(lambda: len(subscribers(new)) == 2, 10, "both nodes subscribed on the new master")
    for node in (a, b):
        until(lambda node=node: whole(node), 10, "node whole")
        users = api(node).users_info("presence-room")["users"]
        assert sorted(u["id"] for u in users) == ["ann", "ben"]
    assert on_a.find(type="member_removed") == []
