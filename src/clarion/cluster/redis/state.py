"""The cluster-wide channel state on Redis.

:class:`RedisState` keeps counts in Redis hashes (see :mod:`.keys`), changed by Lua
scripts so that the node whose change crosses 0 <-> 1 is the only one to report it
(occupied, vacated, member added or removed, user online or offline): each webhook is
fired once for the cluster. Each change is also made to a local shadow, this node's
share (a :class:`~clarion.cluster.memory.MemoryState`), which answers while Redis is
down and is written back when it returns (:mod:`.membership`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec

from clarion.cluster.interfaces import (
    CachedEvent,
    ChannelCounts,
    ChannelState,
    Joined,
    Left,
    Member,
    NodeInfo,
    Occupied,
    OnReaped,
    PresenceFull,
)
from clarion.cluster.memory import MemoryState
from clarion.cluster.redis import scripts
from clarion.cluster.redis.link import RedisLink, text, texts
from clarion.cluster.redis.membership import Membership
from clarion.protocol.names import listed_channels

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _changes_share(
    method: Callable[Concatenate[RedisState, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[RedisState, _P], Coroutine[Any, Any, _R]]:
    """A change to this node's share: it passes the membership's
    :class:`~clarion.cluster.redis.membership.ShareGate` (it waits while the share is
    being registered again, and a registration waits for it to end)."""

    @functools.wraps(method)
    async def gated(self: RedisState, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        gate = self._gate
        while gate.registering is not None:
            await gate.registering.wait()
        gate.changing += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            gate.changing -= 1
            if not gate.changing and gate.settled is not None:
                gate.settled.set()

    return gated


class RedisState(ChannelState):
    """The cluster state in Redis, this node's share beside it, and (in ``membership``)
    this node's lease, re-registration and the reaping of dead nodes."""

    def __init__(
        self, link: RedisLink, lease: float, membership: type[Membership] = Membership
    ) -> None:
        self.link = link
        self.keys = link.keys
        self.lease = lease
        self.local = MemoryState()  # this node's share; answers while Redis is down
        self.membership = membership(link, self.local, lease)
        self._gate = self.membership.gate
        client = link.client
        self._join = scripts.register(client, "join")
        self._leave = scripts.register(client, "leave")
        self._sign = scripts.register(client, "sign")
        self._count_turn = scripts.register(client, "count_turn")
        self._info_codec = msgspec.json.Encoder()

    def on_reaped(self, callback: OnReaped) -> None:
        """``callback`` hears what reaping a dead node (or leaving) implied."""
        self.membership.on_reaped(callback)

    async def ready(self) -> bool:
        return self.link.up and self.link.whole and self._gate.registering is None

    async def housekeeping(self) -> None:
        await self.local.housekeeping()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script; None (and the link marked down) when Redis is not there."""
        return await self.link.guarded(lambda: script(keys=keys, args=args))

    @_changes_share
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member | None, member_limit: int
    ) -> Joined:
        info = self._info_codec.encode(member.user_info).decode() if member is not None else ""
        user = member.user_id if member is not None else ""
        keys = self.keys.channel_keys(app_id, channel)
        if member is not None:
            keys.append(self.keys.left(app_id, channel, user))
        await self.membership.note_app(app_id)
        result = await self._call(self._join, keys, [channel, app_id, user, info, member_limit])
        if result is not None and result[0] == -1:
            raise PresenceFull(channel)
        local = await self.local.join(app_id, channel, socket_id, member, 1 << 30)
        if result is None:
            return local
        members = None
        if member is not None and result[2]:
            flat = result[2]
            members = {
                text(flat[i]): msgspec.json.decode(flat[i + 1]) for i in range(0, len(flat), 2)
            }
        return Joined(
            occupied=result[0] == 1,
            member_added=result[1] == 1,
            members=members,
            version=int(result[3]),
            returned=result[4] == 1,
        )

    @_changes_share
    async def leave(
        self, app_id: str, channel: str, socket_id: str, user_id: str | None, hold: float = 0.0
    ) -> Left:
        local = await self.local.leave(app_id, channel, socket_id, user_id)
        keys = self.keys.channel_keys(app_id, channel)
        if user_id is not None:
            keys.append(self.keys.left(app_id, channel, user_id))
        result = await self._call(
            self._leave, keys, [channel, app_id, user_id or "", round(hold * 1000)]
        )
        if result is None:
            return local
        return Left(vacated=result[0] == 1, member_removed=result[1] == 1, version=int(result[2]))

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        return await self.link.guarded(
            lambda: self._presence_members(app_id, channel),
            lambda: self.local.presence_members(app_id, channel),
        )

    async def _presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        flat = await self.link.client.hgetall(self.keys.info(app_id, channel))
        return {text(k): msgspec.json.decode(v) for k, v in flat.items()}

    async def _signed(self, app_id: str, user_id: str, delta: int) -> int | None:
        keys = [self.keys.users(app_id), self.keys.share(app_id)]
        if delta > 0:
            await self.membership.note_app(app_id)
        result = await self._call(self._sign, keys, [user_id, app_id, delta])
        return None if result is None else int(result)

    @_changes_share
    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        local = await self.local.sign_in(app_id, user_id, socket_id)
        count = await self._signed(app_id, user_id, 1)
        return local if count is None else count == 1

    @_changes_share
    async def sign_out(self, app_id: str, user_id: str, socket_id: str) -> bool:
        local = await self.local.sign_out(app_id, user_id, socket_id)
        count = await self._signed(app_id, user_id, -1)
        return local if count is None else count <= 0

    async def online(self, app_id: str, user_ids: list[str]) -> set[str]:
        if not user_ids:
            return await self.local.online(app_id, user_ids)
        return await self.link.guarded(
            lambda: self._online(app_id, user_ids), lambda: self.local.online(app_id, user_ids)
        )

    async def _online(self, app_id: str, user_ids: list[str]) -> set[str]:
        counts = await self.link.client.hmget(self.keys.users(app_id), user_ids)
        return {user for user, count in zip(user_ids, counts, strict=True) if count}

    async def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: int) -> None:
        await self.local.cache_put(app_id, channel, event, data, ttl)
        await self.link.guarded(
            lambda: self.link.client.set(
                self.keys.cache(app_id, channel), msgspec.json.encode([event, data]), ex=ttl
            )
        )

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        # None from Redis is an answer (nothing cached), not a failure: told apart.
        found = await self.link.guarded(lambda: self._cache_get(app_id, channel))
        if found is None:
            return await self.local.cache_get(app_id, channel)
        return found[0]

    async def _cache_get(self, app_id: str, channel: str) -> tuple[CachedEvent | None]:
        key = self.keys.cache(app_id, channel)
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            value, ttl = await pipe.execute()
        if value is None:
            return (None,)
        event, data = msgspec.json.decode(value)
        return (CachedEvent(event, data, max(0, int(ttl))),)

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        return await self.link.guarded(
            lambda: self._channel_counts(app_id, channel),
            lambda: self.local.channel_counts(app_id, channel),
        )

    async def _channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.subs(app_id), channel)
            pipe.hlen(self.keys.members(app_id, channel))
            sockets, users = await pipe.execute()
        return ChannelCounts(max(0, int(sockets or 0)), int(users))

    async def claim_count_turn(self, app_id: str, channel: str, seconds: float) -> float:
        result = await self._call(
            self._count_turn, [self.keys.countturn(app_id, channel)], [int(seconds * 1000)]
        )
        return 0.0 if result is None else int(result) / 1000

    async def listing_version(self, app_id: str) -> int | None:
        # None when Redis is not there: this node's view alone, never reuse a reply for it.
        return await self.link.guarded(lambda: self._listing_version(app_id))

    async def _listing_version(self, app_id: str) -> int:
        return int(await self.link.client.get(self.keys.ver(app_id)) or 0)

    async def occupied_channels(self, app_id: str, prefix: str, with_users: bool) -> Occupied:
        return await self.link.guarded(
            lambda: self._occupied_channels(app_id, prefix, with_users),
            lambda: self._local_occupied_channels(app_id, prefix, with_users),
        )

    async def _occupied_channels(self, app_id: str, prefix: str, with_users: bool) -> Occupied:
        keys = self.keys
        # Keys and values of one hash in one transaction come in the same order;
        # two flat lists parse far faster than HGETALL's 10,000-entry dict.
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.get(keys.ver(app_id))
            pipe.hkeys(keys.subs(app_id))
            pipe.hvals(keys.subs(app_id))
            if with_users:
                pipe.hkeys(keys.usercount(app_id))
                pipe.hvals(keys.usercount(app_id))
            replies = await pipe.execute()
        version = int(replies[0] or 0)
        channels, counts = texts(replies[1]), texts(replies[2])
        keep = listed_channels(channels, prefix)
        if keep is not None:
            channels, counts = [channels[i] for i in keep], [counts[i] for i in keep]
        users = None
        if with_users:
            per_channel = dict(zip(texts(replies[3]), texts(replies[4]), strict=True))
            users = [per_channel.get(c, "0") for c in channels]
        return Occupied(channels, counts, users, version)

    async def _local_occupied_channels(
        self, app_id: str, prefix: str, with_users: bool
    ) -> Occupied:
        local = await self.local.occupied_channels(app_id, prefix, with_users)
        return dataclasses.replace(local, version=None)  # this node's view: never kept

    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        return await self.link.guarded(
            lambda: self._presence_user_ids(app_id, channel),
            lambda: self.local.presence_user_ids(app_id, channel),
        )

    async def _presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        return [text(k) for k in await self.link.client.hkeys(self.keys.members(app_id, channel))]

    # --- membership (see membership.py) --------------------------------------------------

    async def start(self) -> None:
        """Join the cluster: take a lease, and reap the nodes whose lease ran out."""
        await self.membership.start()

    def share_connections(self, mine: Callable[[], dict[str, int]]) -> dict[str, int]:
        """See :meth:`Membership.share_connections`."""
        return self.membership.share_connections(mine)

    async def nodes(self) -> list[NodeInfo] | None:
        return await self.membership.nodes()

    async def stop(self) -> None:
        """Leave the cluster (see :meth:`Membership.stop`)."""
        await self.membership.stop()
