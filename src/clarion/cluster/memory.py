"""The single-process implementations: a publish goes straight back to this node's hub,
and the cluster state is this process's own tables.

Every method completes without suspending, so the callers' awaits cost next to nothing.
"""

from __future__ import annotations

import time
from typing import Any

from clarion.cluster.interfaces import (
    Broker,
    CachedEvent,
    ChannelCounts,
    ChannelState,
    Joined,
    Left,
    Member,
    Occupied,
    PresenceFull,
    RateLimiter,
)
from clarion.protocol.names import listed_channels


class MemoryBroker(Broker):
    def publish(
        self, app_id: str, channel: str, frame: bytes, exclude: str | None, confirm: bool = False
    ) -> None:
        assert self._deliver is not None, "MemoryBroker.bind() was not called"
        self._deliver(app_id, channel, frame, exclude)
        # Delivered: there is nothing to confirm (None keeps the caller's path await-free).


class MemoryState(ChannelState):
    def __init__(self) -> None:
        # app -> channel -> sockets subscribed (per app, so listing one app's is cheap)
        self._sockets: dict[str, dict[str, int]] = {}
        # (app, presence channel) -> user_id -> [user_info, that user's sockets]
        self._members: dict[tuple[str, str], dict[str, list[Any]]] = {}
        self._signed_in: dict[tuple[str, str], int] = {}
        self._cache: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._versions: dict[str, int] = {}  # app -> changes to its counts so far

    def shares(
        self,
    ) -> tuple[
        dict[str, dict[str, int]],
        dict[tuple[str, str], dict[str, list[Any]]],
        dict[tuple[str, str], int],
    ]:
        """Everything counted here: sockets per channel, presence members, signed-in users.

        A clustered state keeps this node's share in a MemoryState and writes it back
        to the cluster after an outage.
        """
        return self._sockets, self._members, self._signed_in

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member | None, member_limit: int
    ) -> Joined:
        key = (app_id, channel)
        added = False
        members: dict[str, list[Any]] | None = None
        if member is not None:
            members = self._members.setdefault(key, {})
            entry = members.get(member.user_id)
            if entry is None:
                if len(members) >= member_limit:
                    if not members:
                        del self._members[key]
                    raise PresenceFull(channel)
                # The first user_info stored wins for a user with several sockets.
                members[member.user_id] = [member.user_info, 1]
                added = True
            else:
                entry[1] += 1
        sockets = self._sockets.setdefault(app_id, {})
        count = sockets.get(channel, 0) + 1
        sockets[channel] = count
        self._versions[app_id] = self._versions.get(app_id, 0) + 1
        snapshot = {user: entry[0] for user, entry in members.items()} if members else None
        return Joined(occupied=count == 1, member_added=added, members=snapshot)

    async def leave(
        self, app_id: str, channel: str, socket_id: str, user_id: str | None, hold: float = 0.0
    ) -> Left:
        key = (app_id, channel)
        removed = False
        members = self._members.get(key)
        if user_id is not None and members is not None:
            entry = members.get(user_id)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del members[user_id]
                    removed = True
                    if not members:
                        del self._members[key]
        sockets = self._sockets.get(app_id, {})
        count = sockets.get(channel, 0) - 1
        if count > 0:
            sockets[channel] = count
        else:
            sockets.pop(channel, None)
        self._versions[app_id] = self._versions.get(app_id, 0) + 1
        return Left(vacated=count <= 0, member_removed=removed)

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        members = self._members.get((app_id, channel), {})
        return {user: entry[0] for user, entry in members.items()}

    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        key = (app_id, user_id)
        count = self._signed_in.get(key, 0) + 1
        self._signed_in[key] = count
        return count == 1

    async def sign_out(self, app_id: str, user_id: str, socket_id: str) -> bool:
        key = (app_id, user_id)
        count = self._signed_in.get(key, 0) - 1
        if count > 0:
            self._signed_in[key] = count
            return False
        self._signed_in.pop(key, None)
        return True

    async def online(self, app_id: str, user_ids: list[str]) -> set[str]:
        return {user for user in user_ids if (app_id, user) in self._signed_in}

    async def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: int) -> None:
        self._cache[(app_id, channel)] = (event, data, time.monotonic() + ttl)

    async def housekeeping(self) -> None:
        """Cached events expire even if nobody reads them (channels published once)."""
        now = time.monotonic()
        for key in [key for key, entry in self._cache.items() if entry[2] <= now]:
            del self._cache[key]

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        entry = self._cache.get((app_id, channel))
        if entry is None:
            return None
        left = entry[2] - time.monotonic()
        if left <= 0:
            del self._cache[(app_id, channel)]
            return None
        return CachedEvent(entry[0], entry[1], int(left))

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        sockets = self._sockets.get(app_id, {}).get(channel, 0)
        return ChannelCounts(sockets, len(self._members.get((app_id, channel), ())))

    async def listing_version(self, app_id: str) -> int | None:
        return self._versions.get(app_id, 0)

    async def occupied_channels(self, app_id: str, prefix: str, with_users: bool) -> Occupied:
        sockets = self._sockets.get(app_id, {})
        channels, counts = list(sockets), list(sockets.values())
        keep = listed_channels(channels, prefix)
        if keep is not None:
            channels, counts = [channels[i] for i in keep], [counts[i] for i in keep]
        users = None
        if with_users:
            members = self._members
            users = [str(len(members.get((app_id, c), ()))) for c in channels]
        return Occupied(channels, list(map(str, counts)), users, self._versions.get(app_id, 0))

    async def presence_user_ids(self, app_id: str, channel: str) -> list[str]:
        return list(self._members.get((app_id, channel), ()))


class MemoryRateLimiter(RateLimiter):
    """Token buckets in this process: capacity ``per_second``, refilled continuously."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}

    async def consume(self, key: str, amount: int, per_second: int) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(per_second), now]
        tokens = min(float(per_second), bucket[0] + (now - bucket[1]) * per_second)
        bucket[1] = now
        if tokens < amount:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - amount
        return True
