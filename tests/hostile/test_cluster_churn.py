"""Subscribers leaving, cleanly and not, while events flow through a two-node cluster.

Frames from the other node can reach a socket that is already closed, while its leave is
on its way. One subscriber's failure never touches another: the remaining subscribers get
every event, in order, exactly once; every leave completes (no phantom subscriber or
presence member on any node, afterwards); no publish fails; nothing is logged as a crash.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pusher
from websockets.asyncio.client import ClientConnection

from tests.support.cluster import RedisServer, api, cluster_config, connect
from tests.support.polling import eventually, until
from tests.support.pusherjs import Driver, JsClient
from tests.support.raw import subscribe
from tests.support.server import RunningServer

# Several channels per socket: a socket leaves them one after the other, and frames for
# those it has not left yet keep coming meanwhile.
PUBLIC = ("churn-0", "churn-1", "churn-2")
PRESENCE = "presence-churn"
CHANNELS = (PRESENCE, *PUBLIC)
RAW_PER_NODE, JS_PER_NODE = 12, 3
EVENTS = 400  # published in all, alternately through each node
SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")


@dataclass
class RawSubscriber:
    """A raw socket in every channel that records the numbered events it is sent."""

    user_id: str
    ws: ClientConnection
    got: dict[str, list[tuple[str, int]]] = field(
        default_factory=lambda: {channel: [] for channel in CHANNELS}
    )
    task: asyncio.Task[None] | None = None

    async def record(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("event") == "numbered":
                data = json.loads(message["data"])
                self.got[message["channel"]].append((data["via"], data["n"]))


async def raw_subscriber(node: RunningServer, user_id: str) -> RawSubscriber:
    ws, sid = await connect(node)
    auth = SDK.authenticate(PRESENCE, sid, {"user_id": user_id})
    assert (await subscribe(ws, PRESENCE, **auth))["event"].endswith("subscription_succeeded")
    for channel in PUBLIC:
        assert (await subscribe(ws, channel))["event"].endswith("subscription_succeeded")
    sub = RawSubscriber(user_id, ws)
    sub.task = asyncio.create_task(sub.record())
    return sub


def reset(ws: ClientConnection) -> None:
    """Drop the socket with a TCP RST: no close frame, no FIN."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


@dataclass
class Publisher:
    """Numbered events on both channels, through node A and node B in turn."""

    nodes: dict[str, pusher.Pusher]
    sent: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})
    statuses: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for n in range(EVENTS):
            via = "ab"[n % 2]
            try:
                self.nodes[via].trigger(list(CHANNELS), "numbered", {"via": via, "n": n})
            except pusher.errors.PusherBadStatus as exc:
                self.statuses.append(int(str(exc).split(":", 1)[0]))
            else:
                self.statuses.append(200)
                self.sent[via].append(n)
            time.sleep(0.002)
        self.done.set()


def per_source(got: list[tuple[str, int]]) -> dict[str, list[int]]:
    """What a subscriber got, as the sequence of each publishing node."""
    return {via: [n for source, n in got if source == via] for via in "ab"}


def js_got(client: JsClient, channel: str) -> list[tuple[str, int]]:
    return [(r["data"]["via"], r["data"]["n"]) for r in client.events(channel, "numbered")]


def test_subscribers_leaving_while_events_flow_touch_nobody_else(
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    config = cluster_config(redis_server)
    a, b = make_server(config), make_server(config)
    nodes = {"a": a, "b": b}
    js = make_driver(a)
    js_clients: dict[str, JsClient] = {}
    for via, node in nodes.items():
        for i in range(JS_PER_NODE):
            name = f"js-{via}{i}"
            client = js_clients[name] = js.client(name, host=node.host, port=node.port)
            client.subscribe(PRESENCE, presence={"user_id": name, "user_info": {}})
            for channel in PUBLIC:
                client.subscribe(channel)

    async def main() -> tuple[list[RawSubscriber], Publisher]:
        raws = {
            via: [await raw_subscriber(node, f"raw-{via}{i}") for i in range(RAW_PER_NODE)]
            for via, node in nodes.items()
        }
        publisher = Publisher({via: api(node) for via, node in nodes.items()})
        thread = threading.Thread(target=publisher.run, daemon=True)
        thread.start()
        # A third leave while events flow, spread over the run: on each node two raw
        # sockets close cleanly, two are reset, and one pusher-js client disconnects.
        leaving: list[tuple[str, Any]] = []
        for via in "ab":
            mine = raws[via]
            leaving += [("close", mine[0]), ("reset", mine[1]), ("close", mine[2])]
            leaving += [("reset", mine[3]), ("js", js_clients[f"js-{via}0"])]
        for kind, who in leaving:
            # Paced by the publisher's progress: each goes with events in flight.
            count = len(publisher.statuses)
            await eventually(lambda c=count: len(publisher.statuses) >= c + 20, 20)
            if kind == "close":
                who.task.cancel()
                await who.ws.close()
            elif kind == "reset":
                who.task.cancel()
                reset(who.ws)
            else:
                await asyncio.to_thread(who.disconnect)
        await eventually(publisher.done.is_set, 60)
        gone = {id(who) for _, who in leaving}
        stayers = [sub for via in "ab" for sub in raws[via] if id(sub) not in gone]
        sent = publisher.sent

        def complete() -> bool:
            return all(
                per_source(sub.got[channel]) == sent for sub in stayers for channel in CHANNELS
            )

        try:
            await eventually(complete, 15)
        except AssertionError:
            for sub in stayers:
                for channel in CHANNELS:
                    assert per_source(sub.got[channel]) == sent, (sub.user_id, channel)
        js_left = {f"js-{via}0" for via in "ab"}
        for name, client in js_clients.items():
            if name in js_left:
                continue
            for channel in CHANNELS:
                await eventually(
                    lambda c=client, ch=channel: len(js_got(c, ch)) >= len(publisher.statuses),
                    15,
                )
                assert per_source(js_got(client, channel)) == sent, (name, channel)
        return stayers, publisher

    stayers, publisher = asyncio.run(main())
    assert set(publisher.statuses) == {200}, publisher.statuses

    connected = sorted(
        [sub.user_id for sub in stayers] + [name for name in js_clients if not name.endswith("0")]
    )
    for node in (a, b):
        client = api(node)

        def settled(client: pusher.Pusher = client) -> bool:
            counts = [
                client.channel_info(channel, ["subscription_count"])["subscription_count"]
                for channel in CHANNELS
            ]
            users = sorted(u["id"] for u in client.users_info(PRESENCE)["users"])
            return counts == [len(connected)] * len(CHANNELS) and users == connected

        until(settled, 10, f"no phantom subscriber or member on {node.port}")
    for node in (a, b):
        assert node.stop() == 0, "".join(node.output)  # a clean SIGTERM shutdown
        assert not [line for line in node.output if "Traceback" in line], "".join(node.output)
