"""The Redis job store bounds each queue by bytes as the in-memory one does: the oldest
jobs are dropped while the payloads exceed ``limit_bytes``, their events counted, and
the total follows retries, deliveries and drops. In-process against a real redis-server.
"""

from __future__ import annotations

import asyncio

from clarion.cluster.redis import RedisLink
from clarion.cluster.redis.jobs import RedisJobStore
from tests.support.cluster import RedisServer
from tests.unit.webhooks.test_stores import job

Q = "1:0"
LEASE = 15.0


def test_a_redis_queue_is_bounded_by_bytes(redis_server: RedisServer) -> None:
    async def main() -> None:
        link = RedisLink(redis_server.url, "jobs")
        await link.connect()
        store = RedisJobStore(link)
        _, jobs = link.keys.job_keys(Q)

        async def total() -> int:
            return int(await link.client.hget(jobs, "bytes") or 0)

        async def add(payload: bytes) -> int:
            # Jobs due in the same millisecond are ordered by their random ids: these
            # are a millisecond apart, so that which go first is known.
            await asyncio.sleep(0.002)
            return await store.add(Q, payload, 100, 4000)

        try:
            for _ in range(4):
                assert await add(job(10, 1000)) == 0
            assert await total() == 4000
            assert await add(job(3, 1500)) == 20  # two jobs of 10 went
            assert await store.size(Q) == 3 and await total() == 3500
            # A retry replaces the payload, and its size in the total.
            [(job_id, _)] = await store.claim(Q, 1, LEASE)
            await store.retry(Q, job_id, job(10, 400), 0.0)
            assert await total() == 2900
            # The newest stays alone even when it is larger than the bound.
            assert await add(job(7, 9000)) == 23
            assert await store.size(Q) == 1 and await total() == 9000
            [(job_id, _)] = await store.claim(Q, 1, LEASE)
            await store.done(Q, job_id)
            assert await store.size(Q) == 0
            assert not await link.client.exists(jobs)  # nothing left behind
            # A job stored before the count was in the payload counts as one event.
            await add(b'{"u":"http://x","e":[]}')
            assert await add(job(1, 5000)) == 1
        finally:
            await link.close()

    asyncio.run(main())
