"""Registering a node's share again (after an outage or an expired lease) while its
sockets keep subscribing: the share in Redis must end equal to the node's own counts.

Driven in-process against a real redis-server, since the race is between two Redis
calls of one node: a subscribe whose script is on its way and the registration that
replaces the node's whole share.
"""

from __future__ import annotations

import asyncio

import pytest

from clarion.cluster.interfaces import Member
from clarion.cluster.redis import RedisLink, RedisState
from tests.support.cluster import RedisServer


async def _counts(link: RedisLink, app_id: str) -> dict[str, int]:
    raw = await link.client.hgetall(link.keys.subs(app_id))
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.standalone_redis
def test_a_subscribe_racing_a_registration_is_neither_lost_nor_counted_twice(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        link = RedisLink(redis_server.url, "race")
        await link.connect()
        state = RedisState(link, lease=5.0)
        await state.start()
        try:
            await state.join("1", "first", "1.1", None, 100)
            for round_ in range(20):
                channel = f"raced-{round_}"
                member = Member(f"user-{round_}", {"n": round_})
                # The subscribe's script is sent first, then the registration starts.
                await asyncio.gather(
                    state.join("1", channel, "1.2", None, 100),
                    state.join("1", f"presence-{round_}", "1.2", member, 100),
                    state.membership.register_again(),
                    state.leave("1", "first", "1.1", None) if round_ == 10 else asyncio.sleep(0),
                )
                local = (await state.local.occupied_channels("1", "", False)).names
                assert await _counts(link, "1") == dict.fromkeys(local, 1)
                users = await link.client.hgetall(link.keys.usercount("1"))
                assert {k.decode(): int(v) for k, v in users.items()} == {
                    f"presence-{r}": 1 for r in range(round_ + 1)
                }
        finally:
            await state.stop()
            await link.close()

    asyncio.run(main())
