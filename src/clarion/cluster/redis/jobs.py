"""The webhook outbox shared through Redis: the durable job queue (:class:`RedisJobStore`)
and the marks of webhooks held back (:class:`RedisHeldMarks`)."""

from __future__ import annotations

import secrets

from clarion.cluster.interfaces import HeldMarks, JobStore, MarkOp
from clarion.cluster.redis import scripts
from clarion.cluster.redis.link import RedisLink, text


class RedisJobStore(JobStore):
    """Webhook jobs in Redis: ``P:wh:jobs:Q`` id -> payload (and ``bytes`` -> the payloads'
    total), ``P:wh:due:Q`` id -> due time (ms, Redis clock). A claim pushes the due time
    one lease ahead, so a job whose node dies mid-delivery becomes due again for the
    others."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._claim = scripts.register(link.client, "job_claim")
        self._add = scripts.register(link.client, "job_add")
        self._done = scripts.register(link.client, "job_done")

    async def add(self, queue: str, payload: bytes, limit: int, limit_bytes: int) -> int:
        job_id = secrets.token_hex(8)
        keys = self.link.keys.job_keys(queue)
        return int(await self._add(keys=keys, args=[job_id, payload, limit, 0, limit_bytes]))

    async def claim(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        keys = self.link.keys.job_keys(queue)
        flat = await self._claim(keys=keys, args=[count, int(lease * 1000)])
        return [(text(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def done(self, queue: str, job_id: str) -> None:
        await self._done(keys=self.link.keys.job_keys(queue), args=[job_id])

    async def retry(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        keys = self.link.keys.job_keys(queue)
        await self._add(keys=keys, args=[job_id, payload, 1 << 30, int(delay * 1000), 1 << 50])

    async def size(self, queue: str) -> int:
        due, _ = self.link.keys.job_keys(queue)
        return int(await self.link.client.zcard(due))


class RedisHeldMarks(HeldMarks):
    """``P:held:K`` for each webhook held back: the holding node's token, or "taken",
    with an expiry a little past the delay (a node that dies while holding leaves
    nothing behind for long)."""

    MARGIN = 10.0  # seconds a mark outlives its delay: a slow release still finds it

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._take = scripts.register(link.client, "held_take")
        self._release = scripts.register(link.client, "held_release")

    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        # None when the store cannot be reached.
        return await self.link.guarded(lambda: self._apply(ops))

    async def _apply(self, ops: list[MarkOp]) -> list[bool | None]:
        keys = self.link.keys
        # After Redis comes back, no release is decided before every node is back on
        # the link (a restarted Redis starts empty: their sockets are not counted yet).
        settled = self.link.whole
        sent: list[int] = []  # indexes of the ops sent to Redis, in order
        async with self.link.client.pipeline(transaction=False) as pipe:
            for index, op in enumerate(ops):
                mark = keys.held(op.key)
                if op.kind == "hold":
                    pipe.set(mark, op.token, px=int((op.seconds + self.MARGIN) * 1000))
                elif op.kind == "take":
                    await self._take(keys=[mark], client=pipe)
                elif settled:
                    state, field = keys.held_condition(op.key)
                    await self._release(keys=[mark, state], args=[field, op.token], client=pipe)
                else:
                    continue
                sent.append(index)
            replies = await pipe.execute() if sent else []
        outcome: list[bool | None] = [None] * len(ops)
        for index, reply in zip(sent, replies, strict=True):
            outcome[index] = bool(reply)
        return outcome
