"""This node's membership of the Redis cluster: its lease, the reaping of dead nodes,
registering its share again after an outage, and the exchange of connection counts.

Every node records its own contribution to the cluster counts in a per-node hash
(``P:node:N``) and renews a lease in ``P:nodes``. When a node dies without saying
goodbye, the first survivor to notice removes that node's contribution in one script
(``reap.lua``) and reports what it implies (:data:`~clarion.cluster.interfaces.Reaped`)
exactly once. When Redis comes back after an outage (or this node's lease had run out),
``register.lua`` replaces this node's share by what it holds now, in one step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from clarion.cluster.interfaces import (
    ChannelVacated,
    MemberRemoved,
    NodeInfo,
    OnReaped,
    Reaped,
    UserOffline,
    node_name,
)
from clarion.cluster.memory import MemoryState
from clarion.cluster.redis import scripts
from clarion.cluster.redis.link import RedisLink, stop_tasks, text

log = logging.getLogger("clarion.redis")

CONNECTION_SHARE_INTERVAL = 1.0  # seconds between two exchanges of connection counts


class ShareGate:
    """Changes to this node's share (its local counts and their Redis copy) against its
    registration: a change waits while the share is being registered again, and a
    registration waits for the changes under way to end, so that the share it reads
    and writes is never one change behind."""

    __slots__ = ("changing", "registering", "settled")

    def __init__(self) -> None:
        self.changing = 0  # changes to this node's share under way
        self.registering: asyncio.Event | None = None  # set when a registration ends
        self.settled: asyncio.Event | None = None  # set when no change is under way


class Membership:
    """Leases, reaping, re-registration and connection counts of one node."""

    def __init__(self, link: RedisLink, local: MemoryState, lease: float) -> None:
        self.link = link
        self.keys = link.keys
        self.local = local
        self.lease = lease
        self.gate = ShareGate()
        client = link.client
        self._reap = scripts.register(client, "reap")
        self._register = scripts.register(client, "register")
        self._heartbeat = scripts.register(client, "heartbeat")
        self._on_reaped: OnReaped | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn_task: asyncio.Task[None] | None = None
        link.peer_wait = lease  # a node not back within its lease is dead
        self.elsewhere: dict[str, int] = {}  # app -> connections on the other nodes
        self._info_codec = msgspec.json.Encoder()
        self._register_lock = asyncio.Lock()
        self._stopped = False
        # What the admin console's node list shows of this node (P:about:N).
        self.about = {"name": node_name(), "since": f"{time.time():.3f}"}
        # First: the gate closes before any other listener lets a change through.
        link.on_reconnect(self.register_again, first=True)

    def on_reaped(self, callback: OnReaped) -> None:
        self._on_reaped = callback

    async def note_app(self, app_id: str) -> None:
        """This node is about to take a share in app ``app_id`` (a join, a sign-in):
        nothing to do on a standalone Redis, where its share is one hash."""

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script; None when Redis is not there."""
        return await self.link.guarded(lambda: script(keys=keys, args=args))

    async def start(self) -> None:
        await self._beat()
        await self.link.guarded(self._about_now)
        self._task = asyncio.create_task(self._leases())

    def share_connections(self, mine: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Every second, write this node's open connections per app (``mine()``) and
        read the other nodes': the returned dict holds their sum per app, kept current,
        so that an app's ``max_connections`` holds for the cluster (within a second).

        ``P:conns:N`` expires a lease after its last write: a dead node's connections
        stop counting when its lease would, with no reaping needed.
        """
        self._conn_task = asyncio.create_task(self._share_connections(mine))
        return self.elsewhere

    def _note_peers(self, present: set[str], back: set[str] | None = None) -> None:
        """Track the other nodes: after an outage, those seen before it come back
        (``back``: those of them known to be back, by default every one present)."""
        link = self.link
        link.waiting_for -= present if back is None else back
        if link.whole and present != link.peers:
            log.info(
                "cluster: %d other node(s) (joined %s, gone %s)",
                len(present),
                sorted(present - link.peers) or "-",
                sorted(link.peers - present) or "-",
            )
            link.peers = present

    async def _share_connections(self, mine: Callable[[], dict[str, int]]) -> None:
        link = self.link
        while True:
            # Faster while peers are awaited after an outage: publishes answer 503 until
            # this node has seen them back.
            waiting = link.waiting_for and not link.whole
            await asyncio.sleep(
                CONNECTION_SHARE_INTERVAL / 10 if waiting else CONNECTION_SHARE_INTERVAL
            )
            try:
                # While the link is down, the last known counts stand.
                await link.guarded(lambda: self._exchange_connections(mine))
            except Exception:  # the exchange must go on, whatever happened
                log.exception("exchanging connection counts failed; retrying")

    async def _listening(self, others: list[str]) -> set[str]:
        """Of the nodes with a lease, those back since the outage: subscribed again on
        this Redis. A lease alone does not tell: a promoted replica (Sentinel) or a Redis
        restarted from disk holds those of nodes not back yet."""
        waiting = [node for node in others if node in self.link.waiting_for]
        if not waiting:
            return set(others)
        keys = self.keys
        counts = await self.link.client.pubsub_numsub(*(keys.here(node) for node in waiting))
        listening = {text(channel) for channel, count in counts if count}
        return {node for node in others if node not in waiting or keys.here(node) in listening}

    async def _exchange_connections(self, mine: Callable[[], dict[str, int]]) -> None:
        client, keys = self.link.client, self.keys
        counts: dict[Any, int] = {app: n for app, n in mine().items() if n > 0}
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(keys.own_conns)
            if counts:
                pipe.hset(keys.own_conns, mapping=counts)
                pipe.pexpire(keys.own_conns, int(self.lease * 1000))
            self._write_about(pipe)
            pipe.zrange(keys.nodes, 0, -1)
            nodes = (await pipe.execute())[-1]
        others = [text(n) for n in nodes if text(n) != keys.node_id]
        self._note_peers(await self._listening(others))
        async with client.pipeline(transaction=False) as pipe:
            for node in others:
                pipe.hgetall(keys.conns(node))
            replies = await pipe.execute() if others else []
        totals: dict[str, int] = {}
        for reply in replies:
            for app, n in reply.items():
                totals[text(app)] = totals.get(text(app), 0) + int(n)
        self.elsewhere.clear()
        self.elsewhere.update(totals)

    # --- the node list of the admin console ---------------------------------------------

    def _write_about(self, pipe: Any) -> None:
        """This node's name and start, expiring a lease after the last exchange."""
        about = self.keys.about(self.keys.node_id)
        pipe.hset(about, mapping=self.about)
        pipe.pexpire(about, int(self.lease * 1000))

    async def _about_now(self) -> None:
        async with self.link.client.pipeline(transaction=True) as pipe:
            self._write_about(pipe)
            await pipe.execute()

    async def nodes(self) -> list[NodeInfo] | None:
        """The nodes holding a lease, with their connections and the age of their last
        heartbeat (on the Redis clock); None while Redis cannot be asked."""
        return await self.link.guarded(self._nodes)

    async def _nodes(self) -> list[NodeInfo]:
        client, keys = self.link.client, self.keys
        async with asyncio.timeout(self.link.timeout):
            now_ms, leases = await self._clock_and_leases()
        ids = [text(node) for node, _ in leases]
        async with asyncio.timeout(self.link.timeout), client.pipeline(transaction=False) as pipe:
            for node in ids:
                pipe.hgetall(keys.conns(node))
                pipe.hgetall(keys.about(node))
            replies = await pipe.execute() if ids else []
        found = []
        for i, (node, (_, expiry)) in enumerate(zip(ids, leases, strict=True)):
            conns, about = replies[2 * i], {text(k): text(v) for k, v in replies[2 * i + 1].items()}
            # A lease is renewed for `lease` seconds: its last renewal is that much earlier.
            renewed = float(expiry) - self.lease * 1000
            since = about.get("since")
            found.append(
                NodeInfo(
                    id=node,
                    name=about.get("name") or node,
                    connections=sum(int(n) for n in conns.values()),
                    up_since=float(since) if since else None,
                    heartbeat_age=max(0.0, (now_ms - renewed) / 1000),
                    this=node == keys.node_id,
                )
            )
        return found

    async def _clock_and_leases(self) -> tuple[int, list[Any]]:
        """The Redis clock (ms) and the leases with their expiry, in one round trip."""
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self.keys.nodes, 0, -1, withscores=True)
            (seconds, micros), leases = await pipe.execute()
        return int(seconds) * 1000 + int(micros) // 1000, leases

    async def _beat(self) -> list[str]:
        result = await self._run(
            self._heartbeat, [self.keys.nodes], [self.keys.node_id, int(self.lease * 1000)]
        )
        return [text(n) for n in result or []]

    async def _leases(self) -> None:
        """Renew this node's lease, and reap nodes whose lease ran out."""
        while True:
            await asyncio.sleep(self.lease / 4)
            try:
                if not await self._still_member():
                    # Our lease ran out (a stalled loop?) and others removed our share:
                    # put it back as after an outage.
                    log.warning("this node's lease had expired: registering its state again")
                    await self.register_again()
                for dead in await self._beat():
                    if dead != self.keys.node_id and not self._awaited(dead):
                        await self._reap_node(dead)
            except Exception:
                log.exception("lease renewal failed; retrying")

    def _awaited(self, node_id: str) -> bool:
        """A node seen before the last outage, not back yet but still within its time:
        no lease could be renewed during the outage (a failover can outlast a lease), so
        one that ran out then says nothing of the node until that time is over."""
        return node_id in self.link.waiting_for and not self.link.whole

    async def _still_member(self) -> bool:
        if not self.link.up:
            return True  # nothing to tell while the link is down
        score = await self.link.client.zscore(self.keys.nodes, self.keys.node_id)
        return score is not None

    async def _reap_node(self, node_id: str) -> None:
        keys = self.keys
        result = await self._run(
            self._reap,
            [keys.nodes, keys.node(node_id)],
            [node_id, "1", *keys.script_templates()],
        )
        if not result:
            return  # another node got there first
        log.warning("node %s stopped renewing its lease: its sockets were removed", node_id)
        if self._on_reaped is not None:
            await self._on_reaped(reaped_changes(result))

    async def register_again(self) -> None:
        """After an outage: replace this node's share in Redis by what it holds now.

        Changes wait from the start (a leave of a socket that joined during the outage,
        reaching Redis first, would count against the other nodes' sockets)."""
        gate = self.gate
        async with self._register_lock:
            gate.registering = registering = asyncio.Event()
            try:
                if self._stopped:
                    return  # left the cluster already: nothing to put back
                while gate.changing:
                    gate.settled = asyncio.Event()
                    await gate.settled.wait()
                gate.settled = None
                await self._write_share()
            finally:
                gate.registering = None
                registering.set()

    async def _write_share(self) -> None:
        sockets, members_of, signed_in = self.local.shares()
        share: list[list[Any]] = []
        for app_id, channels in sockets.items():
            share.extend(["s", app_id, channel, n] for channel, n in channels.items())
        for (app_id, channel), members in members_of.items():
            share.extend(
                ["m", app_id, channel, user, n, self._info_codec.encode(info).decode()]
                for user, (info, n) in members.items()
            )
        share.extend(["u", app_id, user, n] for (app_id, user), n in signed_in.items())
        keys = self.keys
        await self._register(
            keys=[keys.nodes, keys.own_node],
            args=[
                keys.node_id,
                int(self.lease * 1000),
                self._info_codec.encode(share),
                *keys.script_templates(),
            ],
        )

    async def stop(self) -> None:
        """Leave the cluster: this node's share is removed at once (not after its lease),
        and what that implies (members removed, channels vacated) is reported."""
        self._stopped = True
        self.link.waiting_for.clear()  # leaving: what is held is decided as things are
        await stop_tasks([t for t in (self._task, self._conn_task) if t is not None])
        keys = self.keys
        await self.link.guarded(
            lambda: self.link.client.delete(keys.own_conns, keys.about(keys.node_id))
        )
        result = await self._run(
            self._reap,
            [keys.nodes, keys.own_node],
            [keys.node_id, "0", *keys.script_templates()],
        )
        if result and self._on_reaped is not None:
            await self._on_reaped(reaped_changes(result))


def reaped_changes(result: list[Any]) -> list[Reaped]:
    """What ``reap.lua`` reports (one array per change: 'r', version, app, channel, user;
    'v', version, app, channel; 'o', 0, app, user), as typed changes: members removed
    before channels vacated, as for a normal leave."""
    items = [(text(kind), int(version), [text(p) for p in rest]) for kind, version, *rest in result]
    items.sort(key=lambda item: "rvo".index(item[0]))
    changes: list[Reaped] = []
    for kind, version, (app_id, *rest) in items:
        if kind == "r":
            changes.append(MemberRemoved(app_id, rest[0], rest[1], version))
        elif kind == "v":
            changes.append(ChannelVacated(app_id, rest[0]))
        else:
            changes.append(UserOffline(app_id, rest[0]))
    return changes
