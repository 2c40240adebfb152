"""Two Clarion nodes on a six-process Redis Cluster (three masters, three replicas): the
``redis-cluster`` adapter, with sharded pub/sub and hash-tagged keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pusher
import pytest

from tests.support.cluster import api, cluster_config, connect
from tests.support.raw import recv_json, subscribe
from tests.support.redis_cluster import RedisCluster
from tests.support.server import RunningServer

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


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

    try:
        asyncio.run(main())
    finally:
        print("A:", "".join(a.output)[-3000:])
        print("B:", "".join(b.output)[-3000:])
