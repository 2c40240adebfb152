"""The cluster on Redis Cluster (``adapter = "redis-cluster"``): what differs from a
standalone Redis, as subclasses of the standalone parts.

* **State.** Every key of an app carries the hash tag ``{A}`` (:mod:`.keys`), so join,
  leave, sign and the held marks stay single-slot scripts. A node's share is split per
  app (``P:node:{A}:N``), and the set ``P:{P}:apps:N`` names the apps it has one in.
* **Membership** (:class:`ShardedMembership`). Leases live in the prefix's slot. A node
  whose lease ran out is not reaped in one script any more: the first survivor to beat
  moves it from the leases to ``P:{P}:reaping`` (a claim for one lease,
  ``cluster_heartbeat.lua``), then subtracts its shares app by app (``reap_share.lua``,
  each deleting the share it subtracts, so that each change is reported once even if two
  reapers meet after a claim ran out), then drops the claim. A node comes back
  (``cluster_rejoin.lua``) only once no claim is held on it, then registers its share
  again app by app (``register_share.lua``).
* **Fan-out** (:class:`ShardedBroker`) over sharded pub/sub: ``SPUBLISH`` of the Pusher
  channel's Redis channel goes only through the shard that owns its slot, and each node
  holds one ``SSUBSCRIBE`` connection per shard it listens on. These connections are its
  own (a plain connection to that master), not redis-py's ``ClusterPubSub``: that one
  moves subscriptions to a slot's new master by itself after a failover, silently, and
  this node must *know* when it missed frames (it then answers 503 as after any outage).
* **No 200 for a publish lost in a failover.** A slot's new master has no subscribers
  until they subscribe there again, so a publish it takes meanwhile reaches nobody. Hence:
  a change of topology seen by redis-py marks the link down (:mod:`.topology`); a batch
  of frames whose send spans a link failure is not acknowledged; and after coming back a
  node bumps ``P:{P}:round`` and counts a peer as back only once that peer has checked
  all its shard subscriptions (a PING answered on each) *after* that bump, which it
  records in ``P:{P}:heard`` every second. A node whose shard died cannot pass that
  check until it has subscribed on the new master. Until every peer is back (at most a
  lease), publishes answer 503, as after an outage of a standalone Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from clarion.cluster.interfaces import MarkOp
from clarion.cluster.memory import MemoryState
from clarion.cluster.redis import scripts, topology
from clarion.cluster.redis.jobs import RedisHeldMarks
from clarion.cluster.redis.link import RedisLink, stop_tasks, text, texts
from clarion.cluster.redis.membership import Membership, reaped_changes
from clarion.cluster.redis.pubsub import RedisBroker

log = logging.getLogger("clarion.redis")

AFFIRM_INTERVAL = 1.0  # seconds between two checks of this node's shard subscriptions
REJOIN_POLL = 0.1  # seconds between two tries to come back while being reaped


def _cluster(link: RedisLink) -> RedisCluster:
    return cast(RedisCluster, link.client)


def _master(link: RedisLink, name: str) -> tuple[str, int, str]:
    """(host, port, host:port) of the master serving Redis key or channel ``name``."""
    node = _cluster(link).get_node_from_key(name)
    if node is None:
        raise ConnectionError(f"no Redis Cluster master serves {name!r}")
    return str(node.host), int(node.port), str(node.name)


class ShardedMembership(Membership):
    """Leases, reaping and registration with a share per app (see the module)."""

    def __init__(self, link: RedisLink, local: MemoryState, lease: float) -> None:
        super().__init__(link, local, lease)
        client = link.client
        self._cluster_heartbeat = scripts.register(client, "cluster_heartbeat")
        self._rejoin = scripts.register(client, "cluster_rejoin")
        self._reap_share = scripts.register(client, "reap_share")
        self._register_share = scripts.register(client, "register_share")
        self._apps: set[str] = set()  # apps known to be in P:{P}:apps:N
        self.round = 0  # the round this node's last return from an outage started
        self._heard: dict[str, int] = {}  # node -> the round its subscriptions answered in

    async def note_app(self, app_id: str) -> None:
        if app_id in self._apps:
            return
        keys = self.keys
        added = await self.link.guarded(
            lambda: self.link.client.sadd(keys.apps(keys.node_id), app_id)
        )
        if added is not None:
            self._apps.add(app_id)

    async def _clock_and_leases(self) -> tuple[int, list[Any]]:
        # A Redis Cluster pipeline refuses TIME (it names no key): asked of the master
        # holding the leases, whose clock their expiries are on.
        client, nodes = _cluster(self.link), self.keys.nodes
        seconds, micros = await client.time(target_nodes=client.get_node_from_key(nodes))
        leases = await client.zrange(nodes, 0, -1, withscores=True)
        return int(seconds) * 1000 + int(micros) // 1000, leases

    async def _beat(self) -> list[str]:
        keys = self.keys
        result = await self._run(
            self._cluster_heartbeat,
            [keys.nodes, keys.reaping],
            [keys.node_id, int(self.lease * 1000)],
        )
        return [text(n) for n in result or []]

    async def _reap_node(self, node_id: str) -> None:
        keys, client = self.keys, self.link.client
        apps = await self.link.guarded(lambda: client.smembers(keys.apps(node_id)))
        if apps is None:
            return
        log.warning("node %s stopped renewing its lease: removing its sockets", node_id)
        for app_id in sorted(text(a) for a in apps):
            result = await self._run(
                self._reap_share, [keys.share(app_id, node_id)], keys.script_templates()
            )
            if result is None:
                return  # Redis failed: the claim runs out and the reaping is taken up again
            if result and self._on_reaped is not None:
                await self._on_reaped(reaped_changes(result))
        await self.link.guarded(lambda: self._forget(node_id))

    async def _forget(self, node_id: str) -> None:
        keys = self.keys
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.reaping, node_id)
            pipe.delete(keys.apps(node_id), keys.conns(node_id))
            pipe.hdel(keys.heard, node_id)
            await pipe.execute()

    async def _write_share(self) -> None:
        keys, client = self.keys, self.link.client
        lease_ms = int(self.lease * 1000)
        waited = 0.0
        rejoin_keys = [keys.nodes, keys.reaping]
        while not await self._rejoin(keys=rejoin_keys, args=[keys.node_id, lease_ms]):
            # A survivor is reaping this node (its lease ran out): its share goes first.
            if waited > 2 * self.lease:
                raise RuntimeError("this node is being reaped for too long")
            await asyncio.sleep(REJOIN_POLL)
            waited += REJOIN_POLL
        per_app: dict[str, list[list[Any]]] = {}
        sockets, members_of, signed_in = self.local.shares()
        for app_id, channels in sockets.items():
            per_app.setdefault(app_id, []).extend(
                ["s", app_id, channel, n] for channel, n in channels.items()
            )
        for (app_id, channel), members in members_of.items():
            per_app.setdefault(app_id, []).extend(
                ["m", app_id, channel, user, n, self._info_codec.encode(info).decode()]
                for user, (info, n) in members.items()
            )
        for (app_id, user), n in signed_in.items():
            per_app.setdefault(app_id, []).append(["u", app_id, user, n])
        own_apps = keys.apps(keys.node_id)
        if per_app:
            await client.sadd(own_apps, *per_app)
        # Apps this node had a share in and has none now: their old share is replaced
        # by nothing.
        before = {text(a) for a in await client.smembers(own_apps)}
        templates = keys.script_templates()
        for app_id in sorted(before | set(per_app)):
            share = self._info_codec.encode(per_app.get(app_id, [])).decode()
            await self._register_share(keys=[keys.share(app_id)], args=[share, *templates])
        self._apps = set(before | set(per_app))
        # Peers count as back once they checked their subscriptions after this: those
        # seen before the outage, and any other node holding a lease now (one that
        # started just before the outage, unseen yet, may have lost a shard too).
        self.round = int(await client.incr(keys.round))
        present = set(texts(await client.zrange(keys.nodes, 0, -1)))
        self.link.waiting_for |= present - {keys.node_id}

    async def _exchange_connections(self, mine: Callable[[], dict[str, int]]) -> None:
        await self._read_heard()
        await super()._exchange_connections(mine)

    def _note_peers(self, present: set[str], back: set[str] | None = None) -> None:
        # Called by _exchange_connections with every node present: of those, only the
        # ones that checked their subscriptions since this node's round are back.
        super()._note_peers(present, self._heard_back & present)

    @property
    def _heard_back(self) -> set[str]:
        return {node for node, heard in self._heard.items() if heard >= self.round}

    async def _read_heard(self) -> None:
        heard = await self.link.client.hgetall(self.keys.heard)
        self._heard = {text(k): int(v) for k, v in heard.items()}

    async def stop(self) -> None:
        """Leave the cluster: this node's shares removed app by app, at once."""
        self._stopped = True
        self.link.waiting_for.clear()
        await stop_tasks([t for t in (self._task, self._conn_task) if t is not None])
        keys, client = self.keys, self.link.client
        apps = await self.link.guarded(lambda: client.smembers(keys.apps(keys.node_id)))
        if apps is None:
            return  # Redis is away: the others reap this node once its lease runs out
        for app_id in sorted({text(a) for a in apps} | self._apps):
            result = await self._run(
                self._reap_share, [keys.share(app_id)], keys.script_templates()
            )
            if result and self._on_reaped is not None:
                await self._on_reaped(reaped_changes(result))
        await self.link.guarded(lambda: self._leave())

    async def _leave(self) -> None:
        keys = self.keys
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.nodes, keys.node_id)
            pipe.zrem(keys.reaping, keys.node_id)
            pipe.delete(keys.apps(keys.node_id), keys.own_conns)
            pipe.hdel(keys.heard, keys.node_id)
            await pipe.execute()


class _Shard:
    """This node's SSUBSCRIBE connection to one master, and the channels it holds."""

    __slots__ = (
        "__weakref__",
        "broken",
        "channels",
        "client",
        "leaving",
        "name",
        "on_reconnect",
        "pong",
        "pubsub",
        "reader",
    )

    def __init__(
        self, name: str, client: aioredis.Redis, on_reconnect: Callable[[_Shard], None]
    ) -> None:
        self.name = name  # host:port, as redis-py names the master
        self.client = client
        self.pubsub: Any = client.pubsub()
        self.channels: set[str] = set()
        self.leaving: set[str] = set()  # unsubscribed by us: their sunsubscribe is expected
        # Set when the connection broke, was re-established under us, or the master gave
        # up a slot (an unasked sunsubscribe): frames were missed, it is not kept.
        self.broken = False
        self.pong: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.on_reconnect = on_reconnect

    def reconnected(self, connection: Any) -> None:
        """redis-py re-established the connection under us: frames were missed."""
        if connection is self.pubsub.connection and not self.broken:
            self.on_reconnect(self)


class ShardedBroker(RedisBroker):
    """Fan-out over sharded pub/sub: SPUBLISH, and one SSUBSCRIBE connection per shard."""

    def __init__(self, link: RedisLink, max_queued_bytes: int | None = None) -> None:
        if max_queued_bytes is None:
            super().__init__(link)
        else:
            super().__init__(link, max_queued_bytes)
        self._shards: dict[str, _Shard] = {}
        self._where: dict[str, _Shard] = {}  # Redis channel -> the shard subscribed to it
        self._opening = asyncio.Lock()

    # --- publishing -----------------------------------------------------------------

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        failures = self.link.failures
        async with self.link.client.pipeline(transaction=False) as pipe:
            for name, payload in batch:
                pipe.spublish(name, payload)
            await pipe.execute()
        if self.link.failures != failures:
            # The topology changed (or Redis failed) while the batch was on its way: a
            # frame may have reached a slot's new master before its subscribers did.
            raise ConnectionError("the Redis Cluster changed while the frames were sent")

    # --- subscribing ----------------------------------------------------------------

    async def _shard_for(self, name: str) -> _Shard:
        host, port, master = _master(self.link, name)
        shard = self._shards.get(master)
        if shard is not None:
            return shard
        async with self._opening:
            shard = self._shards.get(master)
            if shard is None:
                shard = await self._open_shard(host, port, master)
                self._shards[master] = shard
            return shard

    async def _open_shard(self, host: str, port: int, name: str) -> _Shard:
        client = aioredis.Redis.from_url(
            topology.node_url(self.link.url, host, port),
            socket_connect_timeout=2.0,
            client_name=f"clarion-{self.link.node_id}",
        )
        shard = _Shard(
            name,
            client,
            lambda s: self._break(s, ConnectionError("the shard subscription was re-established")),
        )
        await shard.pubsub.ping()  # connects it
        shard.pubsub.connection.register_connect_callback(shard.reconnected)
        shard.reader = asyncio.create_task(self._read(shard))
        return shard

    async def _subscribe(self, name: str) -> bool:
        shard = await self._shard_for(name)
        shard.channels.add(name)
        shard.leaving.discard(name)
        self._where[name] = shard
        await shard.pubsub.ssubscribe(name)
        return True

    async def _unsubscribe(self, name: str) -> None:
        if name in self._interest:
            return  # watched again meanwhile
        shard = self._where.pop(name, None)
        if shard is None:
            return
        shard.channels.discard(name)
        shard.leaving.add(name)
        await self.link.guarded(lambda: shard.pubsub.sunsubscribe(name))

    def _break(self, shard: _Shard, exc: BaseException) -> None:
        if shard.broken or self._shards.get(shard.name) is not shard:
            return  # one being replaced already
        shard.broken = True
        log.warning("cluster subscription to %s broken (%r): subscribing again", shard.name, exc)
        self.link.failed(exc)

    async def _read(self, shard: _Shard) -> None:
        while not shard.broken:
            try:
                message = await shard.pubsub.get_message(timeout=1.0)
            except Exception as exc:  # whatever breaks, this node must not go deaf quietly
                self._break(shard, exc)
                return
            if message is None:
                continue
            try:
                self._receive_sharded(shard, message)
            except Exception:
                log.exception("skipped a malformed cluster message")

    def _receive_sharded(self, shard: _Shard, message: dict[str, Any]) -> None:
        kind = text(message["type"])
        if kind == "pong":
            if shard.pong is not None and not shard.pong.done():
                shard.pong.set_result(None)
        elif kind == "smessage":
            self._receive({**message, "type": "message"})
        elif kind == "ssubscribe":
            self._receive({**message, "type": "subscribe"})
        elif kind == "sunsubscribe":
            name = text(message["channel"])
            if name in shard.leaving:
                shard.leaving.discard(name)
            elif name in shard.channels:
                # Not asked for: the master gave the slot up (a failover, a migration).
                self._break(shard, ConnectionError(f"{shard.name} gave up the slot of {name}"))

    async def _answers(self, shard: _Shard) -> bool:
        """Whether the shard's subscription connection answers a PING within the timeout
        (its answer comes after every message sent before it)."""
        pong = shard.pong = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                await shard.pubsub.ping()
                await pong
        except Exception:
            return False
        finally:
            if shard.pong is pong:
                shard.pong = None
        return not shard.broken

    async def _close_shard(self, shard: _Shard) -> None:
        shard.broken = True
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        for name in shard.channels:
            if self._where.get(name) is shard:
                del self._where[name]
        if shard.reader is not None:
            await stop_tasks([shard.reader])
        with contextlib.suppress(Exception):
            await shard.pubsub.aclose()
        with contextlib.suppress(Exception):
            await shard.client.aclose()

    def _in_place(self, shard: _Shard) -> bool:
        """Every channel of the shard still hashes to this master."""
        return all(_master(self.link, name)[2] == shard.name for name in shard.channels)

    async def _resubscribe(self) -> None:
        """After an outage (the topology read again): keep the shard connections that
        held and still own their channels; subscribe every other channel on its master."""
        for shard in list(self._shards.values()):
            if shard.broken or not self._in_place(shard) or not await self._answers(shard):
                await self._close_shard(shard)
        self._pubsub = None  # watch() leaves new channels to the loop below
        try:
            while missing := [name for name in self._interest if name not in self._where]:
                for name in missing:
                    await self._subscribe(name)
        finally:
            self._pubsub = self._shards
        # Channels left while the subscriptions were being made again (unwatch() could
        # not unsubscribe them then).
        for name in [name for name in self._where if name not in self._interest]:
            await self._unsubscribe(name)
        for future in self._confirm.values():
            if not future.done():
                future.set_result(None)
        self._confirm.clear()

    async def _affirm(self) -> None:
        """Every second: record in ``P:{P}:heard`` the round at whose start every shard
        subscription of this node answered (see the module)."""
        keys = self.link.keys
        client = self.link.client
        while True:
            await asyncio.sleep(AFFIRM_INTERVAL)
            if not self.link.up:
                continue
            try:
                await self.link.guarded(lambda: self._affirm_once(keys.round, keys.heard, client))
            except Exception:  # the loop must go on, whatever happened
                log.exception("checking the cluster subscriptions failed; retrying")

    async def _affirm_once(self, round_key: str, heard: str, client: Any) -> None:
        started = int(await client.get(round_key) or 0)
        for shard in list(self._shards.values()):
            if not await self._answers(shard):
                return
        if any(name not in self._where for name in self._interest):
            return  # a subscription is being made again
        await client.hset(heard, self.link.node_id, started)

    async def start(self) -> None:
        self._pubsub = self._shards  # not None: subscriptions may be made
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._affirm()),
        ]
        # The admin console's announcements (P:taps) and rows (P:tap:A) go over sharded
        # pub/sub like the frames: _send SPUBLISHes them, _subscribe SSUBSCRIBEs them on
        # their shard, and _receive_sharded hands their messages to _receive.
        await self._start_taps()

    async def _drop_pubsub(self) -> None:
        for shard in list(self._shards.values()):
            await self._close_shard(shard)
        for future in self._confirm.values():
            if not future.done():
                future.set_result(None)
        self._confirm.clear()


class ShardedHeldMarks(RedisHeldMarks):
    """The marks of held webhooks, one call each: a script in a Redis Cluster pipeline
    is not reloaded on a master that lacks it (a promoted replica), a plain call is."""

    async def _apply(self, ops: list[MarkOp]) -> list[bool | None]:
        keys = self.link.keys
        settled = self.link.whole
        outcome: list[bool | None] = [None] * len(ops)
        client = self.link.client
        for index, op in enumerate(ops):
            mark = keys.held(op.key)
            if op.kind == "hold":
                reply = await client.set(mark, op.token, px=int((op.seconds + self.MARGIN) * 1000))
            elif op.kind == "take":
                reply = await self._take(keys=[mark])
            elif settled:
                state, field = keys.held_condition(op.key)
                reply = await self._release(keys=[mark, state], args=[field, op.token])
            else:
                continue
            outcome[index] = bool(reply)
        return outcome
