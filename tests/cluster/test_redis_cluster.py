"""Two Clarion nodes on a six-process Redis Cluster (three masters, three replicas): the
``redis-cluster`` adapter, with sharded pub/sub and hash-tagged keys.

What only a cluster has (channels spread over the shards, the kill of a master during
publishing, Clarion nodes dying during and after that failover) is tested here; the
whole cluster suite also runs on a Redis Cluster with ``CLARION_TEST_TOPOLOGY=cluster``
(see conftest.py), as CI does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest

from tests.cluster.test_cluster_pusherjs import member, on
from tests.cluster.test_sentinel import Publisher, hooks, members
from tests.support.cluster import api, cluster_config, connect, whole
from tests.support.polling import eventually, until
from tests.support.pusherjs import Driver
from tests.support.raw import recv_json, subscribe
from tests.support.redis_cluster import RedisCluster, RedisClusterNode, running_cluster
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of its own, for a test that kills a master."""
    yield from running_cluster(tmp_path / "redis-cluster")


def channel_on(cluster: RedisCluster, master: RedisClusterNode, prefix: str, stem: str) -> str:
    """A channel name of app 1 whose pub/sub channel is served by ``master``."""
    for index in range(1000):
        if cluster.master_of(f"{prefix}:ch:1:{stem}-{index}") is master:
            return f"{stem}-{index}"
    raise AssertionError("no channel name found on that master")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    yield from running_cluster(tmp_path_factory.mktemp("redis-cluster"))


def test_publish_presence_and_state_across_two_nodes(
    redis_cluster: RedisCluster, make_server: Callable[..., RunningServer]
) -> None:
    config = cluster_config(redis_cluster, prefix="smoke")
    a, b = make_server(config), make_server(config)

    async def main() -> None:
        on_a, _ = await connect(a)
        on_b, sid_b = await connect(b)
        other_b, _ = await connect(b)
        # Many channels: their slots spread over the three shards.
        channels = [f"news-{i}" for i in range(12)]
        for ws in (on_a, on_b, other_b):
            for channel in channels:
                await subscribe(ws, channel)
        for channel in channels:
            api(a).trigger(channel, "first", {"c": channel})
        for ws in (on_a, on_b, other_b):
            got = [json.loads((await recv_json(ws))["data"])["c"] for _ in channels]
            assert sorted(got) == sorted(channels)
        api(a).trigger("news-0", "second", {}, socket_id=sid_b)
        assert (await recv_json(on_a))["event"] == "second"
        assert (await recv_json(other_b))["event"] == "second"
        for index in range(20):
            api(b).trigger("news-1", "seq", index)
        got = [json.loads((await recv_json(on_a))["data"]) for _ in range(20)]
        assert got == list(range(20))

        ann, sid = await connect(a)
        auth = SDK.authenticate("presence-room", sid, {"user_id": "ann", "user_info": {"n": 1}})
        await subscribe(ann, "presence-room", **auth)
        ben, sid = await connect(b)
        auth = SDK.authenticate("presence-room", sid, {"user_id": "ben", "user_info": {"n": 2}})
        reply = await subscribe(ben, "presence-room", **auth)
        assert set(json.loads(reply["data"])["presence"]["hash"]) == {"ann", "ben"}
        added = await recv_json(ann)
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"])["user_id"] == "ben"
        for node in (a, b):
            client = api(node)
            assert client.channel_info("presence-room", ["user_count", "subscription_count"]) == {
                "occupied": True,
                "user_count": 2,
                "subscription_count": 2,
            }
            listed = client.channels_info(attributes=[])["channels"]
            assert set(listed) == {*channels, "presence-room"}
        await ben.close()
        removed = await recv_json(ann)
        assert removed["event"] == "pusher_internal:member_removed"
        for ws in (on_a, on_b, other_b, ann):
            await ws.close()

    asyncio.run(main())


def test_pusherjs_on_two_nodes_sees_one_presence_and_cross_node_events(
    redis_cluster: RedisCluster,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_cluster, prefix="js")
    a, b = make_server(config), make_server(config)
    js = make_driver(a)
    watcher = js.client("watcher", host=a.host, port=a.port)
    watcher.subscribe("presence-lobby", presence={"user_id": "w", "user_info": {"n": "w"}})
    ben = js.client("ben", host=b.host, port=b.port)
    joined = ben.subscribe("presence-lobby", presence={"user_id": "ben", "user_info": {"n": "b"}})
    assert joined is not None
    assert set(joined["members"]["members"]) == {"w", "ben"}
    watcher.wait(
        type="member_added", channel="presence-lobby", member={"id": "ben", "info": {"n": "b"}}
    )
    api(b).trigger("presence-lobby", "hello", {"from": "b"})
    for client in (watcher, ben):
        assert client.wait_event("presence-lobby", "hello")["data"] == {"from": "b"}
    ben.disconnect()
    watcher.wait(
        type="member_removed", channel="presence-lobby", member={"id": "ben", "info": {"n": "b"}}
    )


def _publisher(node: RunningServer, channel: str) -> Callable[[int], bool]:
    client = api(node)

    def publish(seq: int) -> bool:
        try:
            client.trigger(channel, "seq", {"seq": seq})
        except pusher.errors.PusherError:
            return False
        return True

    return publish


def test_a_master_killed_during_publishing_loses_no_acknowledged_publish(
    fresh_cluster: RedisCluster, make_server: Callable[..., RunningServer]
) -> None:
    """kill -9 of the master that holds both the app's state and a channel's slot while
    a node publishes on it: every publish answered 200 reaches the subscriber on the
    other node, publishes flow again once the replica took over, and the state of
    both nodes is there on the new master."""
    cluster = fresh_cluster
    victim = cluster.master_of("fo:subs:{1}")
    channel = channel_on(cluster, victim, "fo", "live")
    # A lease longer than the failover (~3 s): no node is declared dead meanwhile.
    config = cluster_config(cluster, lease=8.0, prefix="fo")
    a, b = make_server(config), make_server(config)

    async def main() -> None:
        watcher, _ = await connect(b)
        await subscribe(watcher, channel)
        other, _ = await connect(a)
        await subscribe(other, "elsewhere")
        # Both nodes know each other, and have checked their subscriptions once.
        for node in (a, b):
            await eventually(lambda node=node: any("other node" in x for x in node.output))
        heard = "fo:{fo}:heard"
        await eventually(lambda: cluster.master_of(heard).command("HLEN", heard) == b":2\r\n")
        publish = _publisher(a, channel)
        answered: dict[int, bool] = {}
        seq = 0
        killed_at = 0.0
        flowing_again = 0
        while flowing_again < 20:
            answered[seq] = ok = await asyncio.to_thread(publish, seq)
            seq += 1
            if seq == 30:
                victim.kill()
                killed_at = time.monotonic()
            elif killed_at and ok and not answered.get(seq - 2, True):
                flowing_again = 1  # the first 200s after a 503
            elif flowing_again and ok:
                flowing_again += 1
            assert not killed_at or time.monotonic() - killed_at < 20, "publishes never resumed"
        assert not all(answered.values()), "the failover went unnoticed"
        received: set[int] = set()
        acknowledged = {n for n, ok in answered.items() if ok}
        try:
            while not acknowledged <= received:
                message = await recv_json(watcher, timeout=5)
                if message["event"] == "seq":
                    received.add(json.loads(message["data"])["seq"])
        except TimeoutError:
            lost = sorted(acknowledged - received)
            failed = sorted(n for n, ok in answered.items() if not ok)
            raise AssertionError(f"acknowledged, never received: {lost}; 503: {failed}") from None
        # The new master holds both nodes' sockets (registered again after the failover).
        info: dict[str, Any] = api(a).channels_info(attributes=[])
        assert set(info["channels"]) == {channel, "elsewhere"}
        for ws in (watcher, other):
            await ws.close()

    asyncio.run(main())


def one_master_prefix(cluster: RedisCluster) -> tuple[str, RedisClusterNode]:
    """A key prefix whose leases, app 1's state and channel ``feed`` are all on one
    master, and that master."""
    for index in range(500):
        prefix = f"rf{index}"
        master = cluster.master_of(f"{prefix}:subs:{{1}}")
        if (
            cluster.master_of(f"{prefix}:{{{prefix}}}:nodes") is master
            and cluster.master_of(f"{prefix}:ch:1:feed") is master
        ):
            return prefix, master
    raise AssertionError("no prefix found with everything on one master")


def test_nodes_dying_during_and_after_a_failover_are_reaped_once(
    fresh_cluster: RedisCluster,
    receiver: Receiver,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """kill -9 of the master holding the leases, app 1's state and the slot of the
    channel published on; kill -9 of a Clarion node during the failover and of another
    after it. Each is reaped from the new master with one member_removed webhook, and
    every publish answered 200 reaches the surviving nodes' clients."""
    cluster = fresh_cluster
    prefix, victim = one_master_prefix(cluster)
    # Longer than the failover (~3 s): the survivors' leases do not run out meanwhile.
    config = cluster_config(cluster, lease=6.0, prefix=prefix, webhooks=hooks(receiver))
    a, b, c = make_server(config), make_server(config), make_server(config)
    js = make_driver(a)
    on_a, on_b, on_c = on(js, "on-a", a), on(js, "on-b", b), on(js, "on-c", c)
    for client, user in ((on_a, "ann"), (on_b, "ben"), (on_c, "cid")):
        client.subscribe("feed")
        client.subscribe("presence-room", presence=member(user))
    receiver.wait_for(lambda _: sorted(members(receiver, "member_added")) == ["ann", "ben", "cid"])
    # Every node checked its shard subscriptions once: the others count it as present.
    heard = f"{prefix}:{{{prefix}}}:heard"
    until(lambda: victim.command("HLEN", heard) == b":3\r\n", 10, "three nodes heard")

    publisher = Publisher([a, b], "feed")
    publisher.start()
    until(lambda: len(publisher.ok) >= 10, 10, "publishes before the failover")
    victim.kill()
    killed = time.monotonic()
    c.process.kill()  # a node dying during the failover
    cluster.wait_ok()  # the victim's replica took its slots over

    back = publisher.back_after(killed)
    assert back - killed < 15, f"publishes flowed again {back - killed:.1f} s after"
    assert publisher.failed, "no publish answered 503 while the master was gone"
    publisher.check_delivered([on_a, on_b], killed)
    receiver.wait_for(lambda _: members(receiver, "member_removed") == ["cid"], 20)
    for node in (a, b):
        until(lambda node=node: whole(node), 10, "node whole")

    b.process.kill()  # a node dying after the failover
    receiver.wait_for(lambda _: members(receiver, "member_removed") == ["cid", "ben"], 20)
    until(lambda: api(a).channel_info("feed", ["subscription_count"])["subscription_count"] == 1)
    users = api(a).users_info("presence-room")["users"]
    assert [u["id"] for u in users] == ["ann"]
    # Once each: no second reaping of either, no survivor reaped by mistake.
    assert members(receiver, "member_removed") == ["cid", "ben"]
    assert [r["member"]["id"] for r in on_a.find(type="member_removed")] == ["cid", "ben"]
