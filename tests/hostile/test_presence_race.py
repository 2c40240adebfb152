"""Two users joining one presence channel on two nodes at the same moment: each learns
of the other exactly once, in its member list or as ``member_added``, never both and
never neither (docs/protocol.md on presence channels; docs/cluster.md on the versions)."""

from __future__ import annotations

import asyncio
import json

import pusher
from websockets.asyncio.client import ClientConnection

from tests.cluster.conftest import redis_server, two_nodes  # noqa: F401 - fixtures
from tests.support.cluster import api, connect
from tests.support.recorder import Recorder
from tests.support.server import RunningServer

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")
ROUNDS = 30


class Client(Recorder):
    """One socket in the round's channel, as ``user``."""

    def __init__(self, ws: ClientConnection, socket_id: str, user: str) -> None:
        super().__init__(ws)
        self.socket_id, self.user = socket_id, user

    def sightings(self, other: str) -> tuple[int, int]:
        """How often ``other`` came in the member list, and as member_added."""
        [succeeded] = self.events("pusher_internal:subscription_succeeded")
        listed = int(other in json.loads(succeeded["data"])["presence"]["ids"])
        added = sum(
            json.loads(f["data"])["user_id"] == other
            for f in self.events("pusher_internal:member_added")
        )
        return listed, added


async def join_at_once(a: RunningServer, b: RunningServer, channel: str) -> list[Client]:
    clients = []
    for node, user in ((a, "ann"), (b, "ben")):
        ws, sid = await connect(node)
        clients.append(Client(ws, sid, user))
    requests = [
        json.dumps(
            {
                "event": "pusher:subscribe",
                "data": {
                    "channel": channel,
                    **SDK.authenticate(channel, c.socket_id, {"user_id": c.user}),
                },
            }
        )
        for c in clients
    ]
    await asyncio.gather(*(c.ws.send(r) for c, r in zip(clients, requests, strict=True)))
    for c in clients:
        await c.wait_for(lambda c=c: c.events("pusher_internal:subscription_succeeded"))
    # A marker published on each node after both joins: pub/sub keeps each node's frames
    # in order, so once a client has both markers, every member_added for it has come.
    for node in (a, b):
        await asyncio.to_thread(api(node).trigger, channel, "marker", {})
    for c in clients:
        await c.wait_for(lambda c=c: len(c.events("marker")) == 2)
    return clients


def test_simultaneous_joins_on_two_nodes_announce_each_member_once(
    two_nodes: tuple[RunningServer, RunningServer],  # noqa: F811
) -> None:
    a, b = two_nodes

    async def main() -> list[str]:
        wrong = []
        for n in range(ROUNDS):
            channel = f"presence-race-{n}"
            ann, ben = await join_at_once(a, b, channel)
            for me, other in ((ann, ben), (ben, ann)):
                listed, added = me.sightings(other.user)
                if listed + added != 1:
                    wrong.append(f"{channel}: {me.user} saw {other.user} {listed}+{added} times")
            for c in (ann, ben):
                await c.close()
        return wrong

    wrong = asyncio.run(main())
    assert wrong == [], f"{len(wrong)} of {2 * ROUNDS} sightings wrong: {wrong[:6]}"
