"""Several Clarion nodes on one real Redis act as one server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pusher
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.cluster import RedisServer, api, cluster_config, connect, ready, whole
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.raw import recv_json, subscribe, ws_connect
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")


async def pong_next(ws: ClientConnection) -> None:
    await ws.send('{"event":"pusher:ping","data":{}}')
    assert (await recv_json(ws))["event"] == "pusher:pong"


def webhooks_to(receiver: Receiver, *event_types: str) -> list[dict[str, Any]]:
    """The app's webhook targets: one, on the receiver."""
    return [{"url": f"{receiver.url}/hooks", "event_types": list(event_types)}]


async def visit(node: RunningServer, presence: str, plain: str, user_id: str) -> ClientConnection:
    """A socket on ``node`` in a presence channel (as ``user_id``) and a public one."""
    ws, sid = await connect(node)
    await subscribe(ws, presence, **SDK.authenticate(presence, sid, {"user_id": user_id}))
    await subscribe(ws, plain)
    return ws


def test_publish_on_one_node_reaches_subscribers_on_every_node(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    config = cluster_config(redis_server)
    a, b, c = make_server(config), make_server(config), make_server(config)

    async def main() -> None:
        on_a, _ = await connect(a)
        on_b, sid_b = await connect(b)
        other_b, _ = await connect(b)
        on_c, _ = await connect(c)
        for ws in (on_a, on_b, other_b, on_c):
            await subscribe(ws, "news")
        api(a).trigger("news", "first", {"n": 1})
        for ws in (on_a, on_b, other_b, on_c):
            assert (await recv_json(ws))["event"] == "first"
        await on_c.close()
        # Exclusion of a socket that lives on the other node.
        api(a).trigger("news", "second", {"n": 2}, socket_id=sid_b)
        assert (await recv_json(on_a))["event"] == "second"
        assert (await recv_json(other_b))["event"] == "second"
        api(b).trigger("news", "third", {"n": 3})
        assert (await recv_json(on_b))["event"] == "third"  # "second" never came
        # Order per channel, as seen from one publisher.
        for index in range(20):
            api(b).trigger("news", "seq", index)
        got = [json.loads((await recv_json(on_a))["data"]) for _ in range(21)]
        assert got[1:] == list(range(20))
        for ws in (on_a, on_b, other_b):
            await ws.close()

    asyncio.run(main())


def test_state_queries_answer_for_the_cluster(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_nodes

    async def main() -> None:
        sockets = []
        for node, user in ((a, "ann"), (b, "ben"), (b, "ann")):
            ws, sid = await connect(node)
            sockets.append(ws)
            auth = SDK.authenticate(
                "presence-room", sid, {"user_id": user, "user_info": {"n": user}}
            )
            reply = await subscribe(ws, "presence-room", **auth)
            assert reply["event"] == "pusher_internal:subscription_succeeded"
            await subscribe(ws, f"plain-{user}")
        presence = json.loads(reply["data"])["presence"]
        assert presence["count"] == 2 and set(presence["hash"]) == {"ann", "ben"}
        for node in (a, b):
            client = api(node)
            assert client.channel_info("presence-room", ["user_count", "subscription_count"]) == {
                "occupied": True,
                "user_count": 2,
                "subscription_count": 3,
            }
            assert sorted(u["id"] for u in client.users_info("presence-room")["users"]) == [
                "ann",
                "ben",
            ]
            channels = client.channels_info(attributes=[])["channels"]
            assert set(channels) == {"presence-room", "plain-ann", "plain-ben"}
            assert client.channels_info("presence-", ["user_count"]) == {
                "channels": {"presence-room": {"user_count": 2}}
            }
            assert client.channels_info(None, ["subscription_count"]) == {
                "channels": {
                    "presence-room": {"subscription_count": 3},
                    "plain-ann": {"subscription_count": 2},
                    "plain-ben": {"subscription_count": 1},
                }
            }
            assert (
                client.channel_info("plain-ann", ["subscription_count"])["subscription_count"] == 2
            )
        # ann's second socket (on b) leaving does not remove ann.
        await sockets[2].close()
        await eventually(
            lambda: (
                api(a).channel_info("plain-ann", ["subscription_count"]).get("subscription_count")
                == 1
            )
        )
        assert api(a).channel_info("presence-room", ["user_count"])["user_count"] == 2
        # The listing asked before (and possibly kept by node a) reflects the change too.
        assert api(a).channels_info(None, ["subscription_count"])["channels"] == {
            "presence-room": {"subscription_count": 2},
            "plain-ann": {"subscription_count": 1},
            "plain-ben": {"subscription_count": 1},
        }
        for ws in sockets[:2]:
            await ws.close()
        await eventually(lambda: api(b).channels_info()["channels"] == {})

    asyncio.run(main())


def test_presence_events_cross_nodes_once_per_user(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_nodes

    async def main() -> None:
        watcher, sid = await connect(a)
        await subscribe(
            watcher, "presence-x", **SDK.authenticate("presence-x", sid, {"user_id": "w"})
        )
        tab1, s1 = await connect(b)
        tab2, s2 = await connect(a)
        await subscribe(tab1, "presence-x", **SDK.authenticate("presence-x", s1, {"user_id": "u"}))
        added = await recv_json(watcher)
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"])["user_id"] == "u"
        await subscribe(tab2, "presence-x", **SDK.authenticate("presence-x", s2, {"user_id": "u"}))
        await tab1.close()
        await pong_next(watcher)  # no member_removed: u still has a tab (on the other node)
        await tab2.close()
        removed = await recv_json(watcher)
        assert removed["event"] == "pusher_internal:member_removed"
        assert json.loads(removed["data"]) == {"user_id": "u"}
        await watcher.close()

    asyncio.run(main())


def test_client_events_users_and_terminate_cross_nodes(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_nodes

    async def main() -> None:
        sender, s1 = await connect(a)
        receiver_ws, s2 = await connect(b)
        for ws, sid in ((sender, s1), (receiver_ws, s2)):
            await subscribe(ws, "private-chat", **SDK.authenticate("private-chat", sid))
        await sender.send(
            json.dumps({"event": "client-hi", "channel": "private-chat", "data": {"x": 1}})
        )
        got = await recv_json(receiver_ws)
        assert got == {"event": "client-hi", "channel": "private-chat", "data": {"x": 1}}
        await pong_next(sender)  # never echoed

        # A user signed in on both nodes, with a watcher on one of them.
        watcher, sw = await connect(a)
        await watcher.send(
            json.dumps(
                {
                    "event": "pusher:signin",
                    "data": SDK.authenticate_user(sw, {"id": "watcher", "watchlist": ["zoe"]}),
                }
            )
        )
        assert (await recv_json(watcher))["event"] == "pusher:signin_success"
        initial = json.loads((await recv_json(watcher))["data"])
        assert initial == {"events": [{"name": "offline", "user_ids": ["zoe"]}]}
        zoe = []
        for node in (a, b):
            ws, sid = await connect(node)
            await ws.send(
                json.dumps(
                    {"event": "pusher:signin", "data": SDK.authenticate_user(sid, {"id": "zoe"})}
                )
            )
            assert (await recv_json(ws))["event"] == "pusher:signin_success"
            await subscribe(ws, "#server-to-user-zoe")
            zoe.append(ws)
        online = json.loads((await recv_json(watcher))["data"])
        assert online == {"events": [{"name": "online", "user_ids": ["zoe"]}]}
        api(b).send_to_user("zoe", "note", {"hi": 1})
        for ws in zoe:
            assert (await recv_json(ws))["event"] == "note"
        api(a).terminate_user_connections("zoe")
        for ws in zoe:
            error = await recv_json(ws)
            assert error["data"]["code"] == 4009
            await asyncio.wait_for(ws.wait_closed(), 5)
        offline = json.loads((await recv_json(watcher))["data"])
        assert offline == {"events": [{"name": "offline", "user_ids": ["zoe"]}]}
        for ws in (sender, receiver_ws, watcher):
            await ws.close()

    asyncio.run(main())


def test_dead_node_is_cleaned_up_once_within_the_lease(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    hooks = webhooks_to(
        receiver, "channel_occupied", "channel_vacated", "member_added", "member_removed"
    )
    config = cluster_config(redis_server, lease=2.0, webhooks=hooks)
    a, b, c = make_server(config), make_server(config), make_server(config)

    async def main() -> None:
        survivor, sid = await connect(a)
        await subscribe(
            survivor, "presence-z", **SDK.authenticate("presence-z", sid, {"user_id": "s"})
        )
        victim, vid = await connect(b)
        await subscribe(
            victim, "presence-z", **SDK.authenticate("presence-z", vid, {"user_id": "v"})
        )
        await subscribe(victim, "only-on-b")
        assert (await recv_json(survivor))["event"] == "pusher_internal:member_added"
        receiver.wait_for(lambda _: len(receiver.events()) == 4)
        asked = ("presence-", ["user_count", "subscription_count"])
        assert api(c).channels_info(*asked) == {
            "channels": {"presence-z": {"user_count": 2, "subscription_count": 2}}
        }
        os.kill(b.process.pid, signal.SIGKILL)  # no goodbye
        removed = await recv_json(survivor, timeout=10)
        assert removed["event"] == "pusher_internal:member_removed"
        assert json.loads(removed["data"]) == {"user_id": "v"}
        receiver.wait_for(
            lambda _: sum(e["name"] == "channel_vacated" for e in receiver.events()) == 1, timeout=5
        )
        assert api(a).users_info("presence-z") == {"users": [{"id": "s"}]}
        assert api(c).channels_info(*asked) == {  # the same listing, asked again
            "channels": {"presence-z": {"user_count": 1, "subscription_count": 1}}
        }
        assert "only-on-b" not in api(c).channels_info()["channels"]
        await pong_next(survivor)
        await survivor.close()

    asyncio.run(main())
    receiver.wait_for(lambda _: sum(e["name"] == "channel_vacated" for e in receiver.events()) == 2)
    names = sorted((e["name"], e.get("channel"), e.get("user_id")) for e in receiver.events())
    # Each webhook exactly once for the cluster, though three nodes saw the changes.
    assert names == sorted(
        [
            ("channel_occupied", "presence-z", None),
            ("member_added", "presence-z", "s"),
            ("member_added", "presence-z", "v"),
            ("channel_occupied", "only-on-b", None),
            ("member_removed", "presence-z", "v"),
            ("channel_vacated", "only-on-b", None),
            ("member_removed", "presence-z", "s"),
            ("channel_vacated", "presence-z", None),
        ]
    )


def test_a_reload_that_lands_on_another_node_sends_no_webhooks(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """vacated/removed are held back on the node the user left; the user coming back on
    another node within the delay cancels them there, as a reload on one node would."""
    hooks = webhooks_to(
        receiver, "channel_occupied", "channel_vacated", "member_added", "member_removed"
    )
    config = cluster_config(redis_server, webhooks=hooks, webhook_delay=1.0)
    a, b = make_server(config), make_server(config)

    def named(*names: str) -> list[tuple[str, str, str | None]]:
        return [
            (e["name"], e["channel"], e.get("user_id"))
            for e in receiver.events()
            if e["name"] in names
        ]

    async def main() -> None:
        first = await visit(a, "presence-page", "page", "u")
        receiver.wait_for(lambda _: len(receiver.events()) == 3)
        await first.close()
        # Gone from the cluster (node a handled the close), then back through node b.
        await eventually(lambda: api(b).channels_info()["channels"] == {})
        second = await visit(b, "presence-page", "page", "u")
        await second.close()  # now really gone: b holds vacated/removed, then sends them
        receiver.wait_for(lambda _: len(named("channel_vacated")) == 2, timeout=10)
        # Node a's held events were due a whole visit earlier, and were dropped.
        assert sorted(named("member_added", "member_removed")) == [
            ("member_added", "presence-page", "u"),
            ("member_removed", "presence-page", "u"),
        ]
        assert sorted(named("channel_occupied", "channel_vacated")) == [
            ("channel_occupied", "page", None),
            ("channel_occupied", "presence-page", None),
            ("channel_vacated", "page", None),
            ("channel_vacated", "presence-page", None),
        ]

    asyncio.run(main())


def test_max_connections_holds_for_the_cluster(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """Each node counts the others' connections (exchanged every second) against the
    app's quota; a connection over it is refused with 4004 wherever it lands."""
    config = cluster_config(redis_server, max_connections=3)
    a, b = make_server(config), make_server(config)

    async def attempt(node: RunningServer) -> tuple[ClientConnection, int | None]:
        """Connect; the error code if refused (the socket is then closed), else None."""
        ws = await ws_connect(node.ws())
        message = await recv_json(ws)
        if message["event"] == "pusher:error":
            await ws.wait_closed()
            return ws, int(message["data"]["code"])
        assert message["event"] == "pusher:connection_established"
        return ws, None

    async def refused_within(node: RunningServer, seconds: float) -> bool:
        """Until the node knows the others' counts it may still accept: such a connection
        is closed again (taking its count back) and the attempt repeated."""
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            ws, code = await attempt(node)
            if code is not None:
                assert code == 4004
                return True
            await ws.close()
            await asyncio.sleep(0.05)
        return False

    async def main() -> None:
        on_a = [await attempt(a) for _ in range(3)]
        assert [code for _, code in on_a] == [None, None, None]
        assert (await attempt(a))[1] == 4004  # the quota, counted on one node
        assert await refused_within(b, 5.0)  # ... and on the other
        await on_a[0][0].close()
        # A place freed on node a is one node b can use (once it has heard of it).
        deadline = asyncio.get_running_loop().time() + 5.0
        taken = None
        while taken is None and asyncio.get_running_loop().time() < deadline:
            ws, code = await attempt(b)
            if code is None:
                taken = ws
            else:
                await asyncio.sleep(0.05)
        assert taken is not None
        assert await refused_within(a, 5.0)
        for ws, _ in on_a[1:]:
            await ws.close()
        await taken.close()

    asyncio.run(main())


@pytest.mark.standalone_redis
def test_a_vacated_seen_by_one_node_during_an_outage_is_checked_before_it_is_sent(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """With Redis away a node only sees its own sockets: its last one leaving looks like
    channel_vacated. The held event is checked against the cluster once Redis is back,
    and dropped, since another node's socket is still there."""
    hooks = webhooks_to(receiver, "channel_occupied", "channel_vacated")
    config = cluster_config(redis_server, webhooks=hooks, webhook_delay=1.0)
    a, b = make_server(config), make_server(config)

    def vacated() -> list[str]:
        return [e["channel"] for e in receiver.events() if e["name"] == "channel_vacated"]

    async def main() -> None:
        on_a, _ = await connect(a)
        on_b, _ = await connect(b)
        for ws in (on_a, on_b):
            await subscribe(ws, "shared")
        receiver.wait_for(lambda _: len(receiver.events()) == 1)  # occupied, once
        redis_server.kill()
        await eventually(lambda: ready(b) == 503, timeout=10)
        await on_b.send('{"event":"pusher:unsubscribe","data":{"channel":"shared"}}')
        await pong_next(on_b)  # the unsubscribe was handled, from b's view alone
        redis_server.start()
        await eventually(lambda: whole(a) and whole(b), timeout=15)
        # A vacated held after the one above, by the same node: once it is out, the
        # other has been decided.
        await subscribe(on_b, "sentinel")
        await on_b.send('{"event":"pusher:unsubscribe","data":{"channel":"sentinel"}}')
        receiver.wait_for(lambda _: "sentinel" in vacated(), timeout=10)
        assert vacated() == ["sentinel"]
        assert api(a).channel_info("shared", ["subscription_count"])["subscription_count"] == 1
        for ws in (on_a, on_b):
            await ws.close()

    asyncio.run(main())


@pytest.mark.standalone_redis
def test_a_held_vacated_whose_mark_redis_lost_is_still_sent(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """The marks only cancel pairs: a mark gone (Redis flushed, or its expiry passed
    during an outage) leaves the cluster state to decide, not a silent drop."""
    hooks = webhooks_to(receiver, "channel_occupied", "channel_vacated")
    node = make_server(cluster_config(redis_server, webhooks=hooks, webhook_delay=1.0))

    async def main() -> None:
        ws, _ = await connect(node)
        await subscribe(ws, "brief")
        receiver.wait_for(lambda _: len(receiver.events()) == 1)
        await ws.close()
        await eventually(lambda: b"held" in redis_server.command("KEYS", "test:held:*"))
        redis_server.command("FLUSHALL")
        receiver.wait_for(lambda _: len(receiver.events()) == 2, timeout=10)
        assert [e["name"] for e in receiver.events()] == ["channel_occupied", "channel_vacated"]

    asyncio.run(main())


def test_webhooks_keep_their_order_behind_a_cluster_check(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """channel_occupied asks Redis whether it cancels a held vacated; the member_added
    right behind it (whose opposite is not wanted here) must not overtake it."""
    hooks = webhooks_to(receiver, "channel_occupied", "channel_vacated", "member_added")
    node = make_server(cluster_config(redis_server, webhooks=hooks, webhook_delay=1.0))

    async def main() -> None:
        for round_ in range(5):
            ws, sid = await connect(node)
            channel = f"presence-order-{round_}"
            await subscribe(ws, channel, **SDK.authenticate(channel, sid, {"user_id": "o"}))
            receiver.wait_for(lambda _, n=2 * (round_ + 1): len(joined()) == n)
            await ws.close()
        assert sorted(joined()) == ["channel_occupied"] * 5 + ["member_added"] * 5
        # Separate requests have no order (docs/protocol.md §43); within one, the cause's order.
        for request in receiver.requests:
            seen = [(e["channel"], e["name"]) for e in request.payload["events"]]
            for channel, name in seen:
                if name == "member_added" and (channel, "channel_occupied") in seen:
                    assert seen.index((channel, "channel_occupied")) < seen.index(
                        (channel, name)
                    ), seen

    def joined() -> list[str]:  # the vacated events, held a second, come in between
        return [e["name"] for e in receiver.events() if e["name"] != "channel_vacated"]

    asyncio.run(main())


@pytest.mark.standalone_redis
def test_after_an_outage_publishes_say_so_until_every_node_is_back(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """A node back on Redis before another cannot deliver to it: its publishes answer
    503 (and its state queries too) until every node seen before the outage is
    registered again."""
    config = cluster_config(redis_server, lease=5.0)
    a, b = make_server(config), make_server(config)

    def publish_error(node: RunningServer) -> str:
        try:
            api(node).trigger("waited", "probe", {})
        except pusher.errors.PusherBadStatus as exc:
            return str(exc)
        return ""

    async def main() -> None:
        late, _ = await connect(b)
        await subscribe(late, "waited")
        peer = _node_id(b)
        await eventually(lambda: any(peer in line for line in a.output if "cluster:" in line))
        redis_server.kill()
        await eventually(lambda: ready(a) == 503 and ready(b) == 503, timeout=10)
        os.kill(b.process.pid, signal.SIGSTOP)  # b cannot come back for now
        try:
            redis_server.start()
            await eventually(lambda: "not every node" in publish_error(a), timeout=4)
            assert ready(a) == 200  # it serves its clients: not taken out of the balancer
            with pytest.raises(pusher.errors.PusherBadStatus, match="Cluster state unavailable"):
                api(a).channel_info("waited")  # b's socket is not counted yet
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        await eventually(lambda: publish_error(a) == "", timeout=10)  # b is back
        api(a).trigger("waited", "whole-again", {})
        while (message := await recv_json(late))["event"] == "probe":
            pass  # probes that reached b once it was back
        assert message["event"] == "whole-again"
        await late.close()

    asyncio.run(main())


def test_a_drained_client_that_moves_to_another_node_sends_no_webhooks(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """A rolling restart: the draining node's held vacated/removed run their delay before
    it exits, so the client reconnecting through another node within it cancels them."""
    hooks = webhooks_to(
        receiver, "channel_occupied", "channel_vacated", "member_added", "member_removed"
    )
    config = cluster_config(redis_server, webhooks=hooks, webhook_delay=2.0)
    a, b = make_server(config), make_server(config)

    async def main() -> None:
        first = await visit(a, "presence-roll", "roll", "r")
        receiver.wait_for(lambda _: len(receiver.events()) == 3)
        a.process.send_signal(signal.SIGTERM)
        await first.wait_closed()
        assert first.close_code == 4200  # reconnect, to another node
        await asyncio.sleep(1.0)  # the client's own pace (an auth round trip, say)
        second = await visit(b, "presence-roll", "roll", "r")
        await asyncio.get_running_loop().run_in_executor(None, a.process.wait, 15)
        # a has exited: whatever it held is decided (and in the shared outbox, ahead of
        # this one).
        await subscribe(second, "after-roll")
        receiver.wait_for(lambda _: any(e["channel"] == "after-roll" for e in receiver.events()))
        assert sorted((e["name"], e["channel"]) for e in receiver.events()) == [
            ("channel_occupied", "after-roll"),
            ("channel_occupied", "presence-roll"),
            ("channel_occupied", "roll"),
            ("member_added", "presence-roll"),
        ]
        await second.close()

    asyncio.run(main())


@pytest.mark.standalone_redis
def test_redis_outage_local_service_and_recovery(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)

    async def main() -> None:
        on_a, _ = await connect(a)
        on_b, _ = await connect(b)
        for ws in (on_a, on_b):
            await subscribe(ws, "resilient")
        members = []  # "p" on both nodes, "q" on b only
        for node, user in ((a, "p"), (b, "p"), (b, "q")):
            ws, sid = await connect(node)
            members.append(ws)
            auth = SDK.authenticate("presence-r", sid, {"user_id": user})
            await subscribe(ws, "presence-r", **auth)
        assert ready(a) == 200
        asked = ("presence-", ["user_count", "subscription_count"])
        for node in (a, b):
            assert api(node).channels_info(*asked)["channels"]["presence-r"]["user_count"] == 2
        redis_server.kill()
        await eventually(lambda: ready(a) == 503 and ready(b) == 503, timeout=10)
        # Accepted and delivered locally; the caller is told cross-node delivery failed.
        with pytest.raises(pusher.errors.PusherBadStatus) as info:
            api(a).trigger("resilient", "local-only", {})
        assert "503" in str(info.value)
        assert (await recv_json(on_a))["event"] == "local-only"
        # Queries answer for the cluster or not at all: this node alone would say 1.
        for query in (
            lambda: api(a).channel_info("resilient", ["subscription_count"]),
            lambda: api(a).channels_info(),
            lambda: api(a).users_info("presence-r"),
        ):
            with pytest.raises(pusher.errors.PusherBadStatus) as refused:
                query()
            assert "503" in str(refused.value) and "Cluster state unavailable" in str(refused.value)
        redis_server.start()  # an empty Redis: the nodes must register everything again
        await eventually(lambda: whole(a) and whole(b), timeout=15)
        api(a).trigger("resilient", "after", {})
        assert (await recv_json(on_b))["event"] == "after"  # "local-only" never reached b
        assert (await recv_json(on_a))["event"] == "after"
        # Every publish answered 200 after the outage reaches the other node: none meets
        # a connection from before it.
        for index in range(30):
            api(a if index % 2 else b).trigger("resilient", "steady", index)
        for ws in (on_a, on_b):
            got = [json.loads((await recv_json(ws))["data"]) for _ in range(30)]
            assert sorted(got) == list(range(30))  # in order per publishing node only
        assert api(b).channel_info("resilient", ["subscription_count"])["subscription_count"] == 2
        for node in (a, b):  # registered again by both nodes
            assert api(node).channels_info(*asked) == {
                "channels": {"presence-r": {"user_count": 2, "subscription_count": 3}}
            }
        await members[2].close()  # "q" leaves: a change after the outage, seen everywhere
        for node in (a, b):
            await eventually(
                lambda node=node: (
                    api(node).channels_info(*asked)
                    == {"channels": {"presence-r": {"user_count": 1, "subscription_count": 2}}}
                )
            )
        for ws in (on_a, on_b, *members[:2]):
            await ws.close()

    asyncio.run(main())


def _node_id(node: RunningServer) -> str:
    found = (re.search(r"as node ([0-9a-f]+)", line) for line in node.output)
    return next(match[1] for match in found if match)


def _kill_connections_of(redis_server: RedisServer, node_id: str, pubsub: bool) -> int:
    """CLIENT KILL the node's pooled connections, and its subscription if ``pubsub``."""
    listing = redis_server.command("CLIENT", "LIST").decode()
    ids = [
        fields["id"]
        for fields in (
            dict(part.split("=", 1) for part in line.split() if "=" in part)
            for line in listing.splitlines()
        )
        if fields.get("name") == f"clarion-{node_id}" and (pubsub or "P" not in fields["flags"])
    ]
    for client_id in ids:
        redis_server.command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


@pytest.mark.standalone_redis
def test_connections_killed_under_a_node_again_and_again(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    """Redis closing a node's connections (a proxy, a failover, CLIENT KILL) is an outage
    the node recovers from every time: it hears the others again, and its subscribes are
    confirmed at once, not after the 2 s confirmation wait."""
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)
    victim = _node_id(b)

    async def main() -> None:
        for round_ in range(8):
            # Half the rounds spare the subscription: only the publishes find out.
            assert _kill_connections_of(redis_server, victim, pubsub=round_ % 2 == 1) > 0
            for _ in range(3):  # traffic through the node meets the dead connections
                with contextlib.suppress(pusher.errors.PusherBadStatus):
                    api(b).trigger("nobody", "x", {})
            await eventually(lambda: ready(b) == 200, timeout=10)
            ws, _ = await connect(b)
            started = asyncio.get_running_loop().time()
            await subscribe(ws, f"after-kill-{round_}")
            assert asyncio.get_running_loop().time() - started < 1.5
            api(a).trigger(f"after-kill-{round_}", "heard", {"round": round_})
            assert (await recv_json(ws))["event"] == "heard"
            await ws.close()

    asyncio.run(main())


@pytest.mark.standalone_redis
def test_boot_waits_for_redis(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    redis_server.kill()
    config = cluster_config(redis_server)

    def start_redis_once_waited_for(line: str) -> None:
        # Started only once the node has said it waits: a fixed delay raced a slow boot.
        if "not reachable" in line and redis_server.process is None:
            redis_server.start()

    node = make_server(config, on_line=start_redis_once_waited_for)
    assert redis_server.process is not None, node.output  # it waited, then listened
    assert ready(node) == 200


@pytest.mark.standalone_redis
def test_workers_share_the_port_and_refuse_the_memory_adapter(
    redis_server: RedisServer, tmp_path: object
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={**os.environ, "CLARION_PORT": "0", "CLARION_METRICS_PORT": "0"},
    )
    assert out.returncode == 2 and "redis" in out.stderr
    env = {
        **os.environ,
        "CLARION_CLUSTER_ADAPTER": "redis",
        "CLARION_REDIS_URL": redis_server.url,
        "CLARION_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", "serve", "--workers", "2", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            if "Clarion listening on" in line:
                port = int(line.split("http://127.0.0.1:")[1].split(" ")[0])
                break
        assert port is not None
        node = RunningServer(process, "127.0.0.1", port, [])

        async def main() -> None:
            sockets = [await connect(node) for _ in range(12)]
            for ws, _ in sockets:
                await subscribe(ws, "everyone")
            assert (
                api(node).channel_info("everyone", ["subscription_count"])["subscription_count"]
                == 12
            )
            api(node).trigger("everyone", "hello", {})
            for ws, _ in sockets:
                assert (await recv_json(ws))["event"] == "hello"
            for ws, _ in sockets:
                await ws.close()

        asyncio.run(main())
        nodes = redis_server.command("ZCARD", "test:nodes")
        assert nodes == b":0\r\n"  # the default prefix is "clarion", not "test"
        # Both workers joined the cluster (the second may finish booting after the first).
        asyncio.run(eventually(lambda: redis_server.command("ZCARD", "clarion:nodes") == b":2\r\n"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert process.returncode == 0
    assert redis_server.command("ZCARD", "clarion:nodes") == b":0\r\n"
