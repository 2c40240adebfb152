"""The outbox's job store and held marks for one process, in memory.

They implement the interfaces the Redis ones do (:class:`JobStore`, :class:`HeldMarks`)
with the same rules, so the outbox runs one code path whether Redis is there or not:

* :class:`MemoryJobStore` is ``RedisJobStore`` in a dictionary: jobs due by time, a claim
  leases them, a retry makes them due again later, the oldest-due are dropped beyond the
  limits (jobs, and bytes of payloads). Ties are broken by arrival, so one target's jobs
  go out first in, first out. Payloads are bytes; when a backlog drained, the memory
  they took is handed back to the OS (:func:`release_free_memory`).
* :class:`MemoryHeldMarks` is ``RedisHeldMarks`` without the cluster state: a hold leaves
  its token, the opposite event takes it, a release is true unless the mark was taken or
  replaced. One process has no other node whose sockets could contradict a release.

Both also answer synchronously (``*_now`` methods): the outbox uses that to keep an
event's path free of awaits when nothing is shared, and to count at shutdown what a
store that dies with the process loses.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import heapq
import itertools
import time
from collections.abc import Callable

from clarion.cluster.interfaces import HeldKey, HeldMarks, JobStore, MarkOp

TAKEN = "taken"  # a mark whose hold was cancelled by the opposite event

# A store that drained hands memory back to the OS once it has freed at least this many
# payload bytes since it last did (smaller drains leave too little to be worth it).
TRIM_FROM = 8 * 1024 * 1024
TRIM_AFTER = 1.0  # seconds from the drain to the trim


def job_events(payload: bytes) -> int:
    """The events of a stored job, from its leading ``{"k":N`` (1 if it has none)."""
    if payload.startswith(b'{"k":'):
        end = payload.find(b",", 5, 32)
        if end > 5 and payload[5:end].isdigit():
            return int(payload[5:end])
    return 1


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the OS.

    Payloads are large allocations that glibc serves from its heap once it has raised
    its mmap threshold; freed, they stay in the process (RSS) until the top of the heap
    is free, which a long-lived allocation above them prevents. ``malloc_trim`` returns
    every free page, wherever it is. Called when a backlog drained, not per job.
    """
    if _TRIM is not None:
        _TRIM(0)


class _Queue:
    """One queue's jobs: payloads by id (and their total size), each job's current
    (due, arrival) and a heap of them. A job rescheduled or removed leaves its old heap
    entry behind; entries that no longer match ``due`` are skipped (and swept out when
    they pile up)."""

    __slots__ = ("bytes", "due", "heap", "leased", "payloads")

    def __init__(self) -> None:
        self.payloads: dict[str, bytes] = {}
        self.bytes = 0
        self.due: dict[str, tuple[float, int]] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.leased: set[str] = set()  # claimed, not yet done or retried

    def schedule(self, job_id: str, when: float, arrival: int) -> None:
        self.due[job_id] = (when, arrival)
        heapq.heappush(self.heap, (when, arrival, job_id))
        if len(self.heap) > 2 * len(self.due) + 64:
            self.heap = [(w, a, j) for j, (w, a) in self.due.items()]
            heapq.heapify(self.heap)

    def pop_first(self, until: float) -> str | None:
        """The id of the earliest job due at ``until`` or before (removed from the heap)."""
        heap = self.heap
        while heap and heap[0][0] <= until:
            when, arrival, job_id = heapq.heappop(heap)
            if self.due.get(job_id) == (when, arrival):
                return job_id
        return None

    def forget(self, job_id: str) -> int:
        """Remove the job; the size of its payload."""
        payload = self.payloads.pop(job_id, b"")
        self.bytes -= len(payload)
        self.due.pop(job_id, None)
        self.leased.discard(job_id)
        return len(payload)


class MemoryJobStore(JobStore):
    """Webhook jobs of this process: lost with it (the outbox counts them at shutdown)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self._arrivals = itertools.count()
        self._jobs = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._bytes = 0  # of every queue's payloads
        self._peak = 0  # the most bytes held since memory was last handed back
        self._trim_pending = False

    def _queue(self, queue: str) -> _Queue:
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[queue] = _Queue()
        return found

    def _put(self, q: _Queue, job_id: str, payload: bytes, when: float) -> None:
        old = q.payloads.get(job_id)
        if old is None:
            self._jobs += 1
            if self._jobs == 1:
                self._empty.clear()
        grown = len(payload) - (len(old) if old is not None else 0)
        q.payloads[job_id] = payload
        q.bytes += grown
        self._bytes += grown
        self._peak = max(self._peak, self._bytes)
        q.leased.discard(job_id)
        q.schedule(job_id, when, next(self._arrivals))

    def _forget(self, queue: str, q: _Queue, job_id: str) -> None:
        if job_id in q.payloads:
            self._bytes -= q.forget(job_id)
            self._jobs -= 1
            if not q.payloads:
                # Emptied: its tables go too (a dict keeps its size after a backlog).
                del self._queues[queue]
            if not self._jobs:
                self._empty.set()
            if self._peak - self._bytes >= TRIM_FROM and (
                not self._jobs or self._bytes <= self._peak // 4
            ):
                # A backlog drained (or mostly): hand the memory its payloads took back.
                self._peak = self._bytes
                self._trim_soon()

    def _trim_soon(self) -> None:
        """Trim in a moment: the deliveries that just finished still hold their bodies
        until their tasks end."""
        if self._trim_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (no loop: called from synchronous code, as in tests)
            release_free_memory()
            return
        self._trim_pending = True
        loop.call_later(TRIM_AFTER, self._trim)

    def _trim(self) -> None:
        self._trim_pending = False
        release_free_memory()

    def add_now(self, queue: str, payload: bytes, limit: int, limit_bytes: int = 1 << 62) -> int:
        q = self._queues.get(queue) or self._queue(queue)
        self._put(q, str(next(self._ids)), payload, self._now())
        if len(q.payloads) <= limit and q.bytes <= limit_bytes:
            return 0
        dropped = 0
        # The newest job stays even alone beyond the bytes (one request is bounded by
        # its size).
        while len(q.payloads) > limit or (q.bytes > limit_bytes and len(q.payloads) > 1):
            # The earliest due goes, as ZPOPMIN does: waiting jobs before leased ones.
            oldest = q.pop_first(float("inf"))
            if oldest is None:
                break
            dropped += job_events(q.payloads[oldest])
            self._forget(queue, q, oldest)
        return dropped

    def claim_now(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        q = self._queues.get(queue)
        if q is None:
            return []
        now = self._now()
        claimed: list[tuple[str, bytes]] = []
        while len(claimed) < count:
            job_id = q.pop_first(now)
            if job_id is None:
                break
            # Due again when the lease runs out: a delivery that never reports back
            # (its task died) is tried again, as another node would in Redis.
            q.schedule(job_id, now + lease, next(self._arrivals))
            q.leased.add(job_id)
            claimed.append((job_id, q.payloads[job_id]))
        return claimed

    def done_now(self, queue: str, job_id: str) -> None:
        q = self._queues.get(queue)
        if q is not None:
            self._forget(queue, q, job_id)

    def retry_now(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        self._put(self._queue(queue), job_id, payload, self._now() + delay)

    def size_now(self, queue: str) -> int:
        q = self._queues.get(queue)
        return len(q.payloads) if q is not None else 0

    def bytes_now(self, queue: str) -> int:
        q = self._queues.get(queue)
        return q.bytes if q is not None else 0

    async def add(self, queue: str, payload: bytes, limit: int, limit_bytes: int) -> int:
        return self.add_now(queue, payload, limit, limit_bytes)

    async def claim(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        return self.claim_now(queue, count, lease)

    async def done(self, queue: str, job_id: str) -> None:
        self.done_now(queue, job_id)

    async def retry(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        self.retry_now(queue, job_id, payload, delay)

    async def size(self, queue: str) -> int:
        return self.size_now(queue)

    # --- shutdown: this store dies with the process ----------------------------------

    def hurry(self) -> None:
        """Every job waiting for a retry is due now: its last chance before the process
        goes. Leased jobs are being delivered and stay leased."""
        now = self._now()
        for q in self._queues.values():
            for job_id, (when, _) in list(q.due.items()):
                if when > now and job_id not in q.leased:
                    q.schedule(job_id, now, next(self._arrivals))

    async def emptied(self) -> None:
        """Return once no job is left (delivered or given up)."""
        await self._empty.wait()

    def drain(self) -> dict[str, list[bytes]]:
        """Remove every job; their payloads per queue (what the shutdown loses)."""
        left = {name: list(q.payloads.values()) for name, q in self._queues.items() if q.payloads}
        self._queues.clear()
        self._jobs = self._bytes = 0
        self._empty.set()
        return left


class MemoryHeldMarks(HeldMarks):
    """Marks of the webhooks this process holds back: token (or "taken") and expiry."""

    MARGIN = 10.0  # seconds a mark outlives its delay, as in Redis

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._marks: dict[HeldKey, tuple[str, float]] = {}
        self._next_sweep = 0.0

    def apply_now(self, op: MarkOp) -> bool:
        now = self._now()
        if now >= self._next_sweep:
            # Taken marks stay until they expire (as with Redis' KEEPTTL): swept now and
            # then, so page reloads do not pile them up.
            self._marks = {k: m for k, m in self._marks.items() if m[1] > now}
            self._next_sweep = now + self.MARGIN
        marks = self._marks
        mark = marks.get(op.key)
        if mark is not None and mark[1] <= now:
            del marks[op.key]
            mark = None
        if op.kind == "hold":
            marks[op.key] = (op.token, now + op.seconds + self.MARGIN)
            return True
        if op.kind == "take":
            if mark is None or mark[0] == TAKEN:
                return False
            marks[op.key] = (TAKEN, mark[1])
            return True
        # release: gone unless taken or replaced by a newer hold.
        if mark is not None:
            if mark[0] != op.token:
                return False
            del marks[op.key]
        return True

    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        return [self.apply_now(op) for op in ops]
