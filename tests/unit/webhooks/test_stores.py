"""The in-memory job store and held marks follow the Redis ones' rules, for one process."""

from __future__ import annotations

import asyncio

import pytest

from clarion.cluster.interfaces import HeldKey, MarkOp
from clarion.webhooks import stores
from clarion.webhooks.stores import MemoryHeldMarks, MemoryJobStore, job_events
from tests.unit.webhooks.fakes import FakeClock

Q = "1:0"
LEASE = 15.0


def _store() -> tuple[MemoryJobStore, FakeClock]:
    clock = FakeClock()
    return MemoryJobStore(clock.now), clock


def test_a_claimed_job_is_leased_and_due_again_when_the_lease_runs_out() -> None:
    store, clock = _store()
    assert store.add_now(Q, b"a", 10) == 0
    [(job_id, payload)] = store.claim_now(Q, 5, LEASE)
    assert payload == b"a"
    assert store.claim_now(Q, 5, LEASE) == []  # leased: nobody else takes it
    clock.advance(LEASE - 0.1)
    assert store.claim_now(Q, 5, LEASE) == []
    clock.advance(0.2)
    assert store.claim_now(Q, 5, LEASE) == [(job_id, b"a")]  # its delivery never reported


def test_jobs_are_claimed_first_in_first_out_up_to_the_count() -> None:
    store, _ = _store()
    for payload in (b"1", b"2", b"3"):
        store.add_now(Q, payload, 10)
    assert [p for _, p in store.claim_now(Q, 2, LEASE)] == [b"1", b"2"]
    assert [p for _, p in store.claim_now(Q, 2, LEASE)] == [b"3"]
    assert store.claim_now(Q, 0, LEASE) == []
    assert store.claim_now("other", 2, LEASE) == []


def test_done_forgets_a_job_and_size_counts_every_job_of_the_queue() -> None:
    store, _ = _store()
    store.add_now(Q, b"a", 10)
    store.add_now(Q, b"b", 10)
    store.add_now("2:0", b"c", 10)
    [(first, _)] = store.claim_now(Q, 1, LEASE)
    assert store.size_now(Q) == 2  # a leased job still counts
    store.done_now(Q, first)
    store.done_now(Q, first)  # twice is harmless
    assert store.size_now(Q) == 1 and store.size_now("2:0") == 1
    assert asyncio.run(store.size(Q)) == 1


def test_a_retried_job_comes_back_after_its_delay_with_its_new_payload() -> None:
    store, clock = _store()
    store.add_now(Q, b"try-1", 10)
    [(job_id, _)] = store.claim_now(Q, 1, LEASE)
    store.retry_now(Q, job_id, b"try-2", 4.0)
    store.add_now(Q, b"later", 10)
    assert [p for _, p in store.claim_now(Q, 5, LEASE)] == [b"later"]
    clock.advance(4.0)
    assert store.claim_now(Q, 5, LEASE) == [(job_id, b"try-2")]


def test_beyond_the_limit_the_earliest_due_are_dropped_before_leased_ones() -> None:
    store, _ = _store()
    store.add_now(Q, b"leased", 2)
    store.claim_now(Q, 1, LEASE)
    store.add_now(Q, b"old", 2)
    assert store.add_now(Q, b"new", 2) == 1
    assert store.size_now(Q) == 2
    assert [p for _, p in store.claim_now(Q, 5, LEASE)] == [b"new"]  # "old" went
    # As with ZPOPMIN: a job due now goes before the leased ones, even the newest.
    assert store.add_now(Q, b"newest", 2) == 1
    assert store.size_now(Q) == 2 and store.claim_now(Q, 5, LEASE) == []


def job(events: int, size: int) -> bytes:
    """A payload as the deliveries store it: ``{"k":N,...`` of about ``size`` bytes."""
    head = b'{"k":%d,"u":"http://x","e":"' % events
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_job_events_reads_the_leading_count() -> None:
    assert job_events(job(37, 100)) == 37
    assert job_events(b'{"u":"http://x"}') == 1  # stored before the count was
    assert job_events(b'{"k":"no"}') == 1


def test_beyond_the_bytes_the_oldest_are_dropped_and_their_events_counted() -> None:
    store, _ = _store()
    for _ in range(4):
        assert store.add_now(Q, job(10, 1000), 100, 4000) == 0
    assert store.bytes_now(Q) == 4000
    assert store.add_now(Q, job(3, 1500), 100, 4000) == 20  # two of 10 events went
    assert store.size_now(Q) == 3 and store.bytes_now(Q) == 3500
    # The newest stays alone even when it is larger than the bound.
    assert store.add_now(Q, job(7, 9000), 100, 4000) == 23
    assert store.size_now(Q) == 1 and store.bytes_now(Q) == 9000


def test_bytes_follow_retries_and_done_and_an_emptied_queue_goes() -> None:
    store, _ = _store()
    store.add_now(Q, job(1, 100), 10, 1 << 20)
    [(job_id, _)] = store.claim_now(Q, 1, LEASE)
    store.retry_now(Q, job_id, job(1, 300), 1.0)
    assert store.bytes_now(Q) == 300
    store.done_now(Q, job_id)
    assert store.bytes_now(Q) == 0 and store.size_now(Q) == 0
    assert store._queues == {}  # its tables, grown by a backlog, are not kept


def test_a_drained_backlog_hands_its_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(stores, "release_free_memory", lambda: trims.append(1))
    monkeypatch.setattr(stores, "TRIM_FROM", 1000)
    store, _ = _store()
    for _ in range(8):
        store.add_now(Q, job(1, 500), 100, 1 << 20)
    claimed = store.claim_now(Q, 8, LEASE)
    for job_id, _ in claimed[:5]:
        store.done_now(Q, job_id)
    assert trims == []  # 1500 bytes freed, 1500 left: not yet a quarter
    store.done_now(Q, claimed[5][0])
    assert trims == [1]  # 1000 left of 4000
    store.done_now(Q, claimed[6][0])
    assert trims == [1]  # 500 freed since: too little
    store.done_now(Q, claimed[7][0])
    assert trims == [1, 1]  # empty, 1000 freed since


def test_the_async_interface_answers_as_the_synchronous_one() -> None:
    store, clock = _store()

    async def main() -> None:
        assert await store.add(Q, b"x", 10, 1 << 20) == 0
        [(job_id, payload)] = await store.claim(Q, 1, LEASE)
        await store.retry(Q, job_id, payload + b"!", 1.0)
        clock.advance(1.0)
        assert await store.claim(Q, 1, LEASE) == [(job_id, b"x!")]
        await store.done(Q, job_id)
        assert await store.size(Q) == 0

    asyncio.run(main())


def test_hurry_brings_retries_forward_but_leaves_leased_jobs_alone() -> None:
    store, _ = _store()
    store.add_now(Q, b"retry", 10)
    store.add_now(Q, b"busy", 10)
    (retry_id, _), _busy = store.claim_now(Q, 2, LEASE)
    store.retry_now(Q, retry_id, b"retry", 60.0)
    store.hurry()
    assert store.claim_now(Q, 5, LEASE) == [(retry_id, b"retry")]


def test_emptied_waits_for_the_last_job_and_drain_takes_what_is_left() -> None:
    store, _ = _store()

    async def main() -> None:
        await store.emptied()  # empty from the start
        store.add_now(Q, b"a", 10)
        store.add_now("2:0", b"b", 10)
        waiter = asyncio.ensure_future(store.emptied())
        [(job_id, _)] = store.claim_now(Q, 1, LEASE)
        store.done_now(Q, job_id)
        await asyncio.sleep(0)  # one turn: the waiter may run, and must still wait
        assert not waiter.done()
        assert store.drain() == {"2:0": [b"b"]}
        await asyncio.wait_for(waiter, 1.0)
        assert store.size_now("2:0") == 0 and store.drain() == {}

    asyncio.run(main())


KEY = HeldKey("1", "channel_vacated", "room", "")


def _marks() -> tuple[MemoryHeldMarks, FakeClock]:
    clock = FakeClock()
    return MemoryHeldMarks(clock.now), clock


def test_a_take_cancels_a_hold_once_and_its_release_is_refused() -> None:
    marks, _ = _marks()
    assert marks.apply_now(MarkOp("hold", KEY, seconds=3.0, token="t1"))
    assert marks.apply_now(MarkOp("take", KEY)) is True
    assert marks.apply_now(MarkOp("take", KEY)) is False  # already taken
    assert marks.apply_now(MarkOp("release", KEY, token="t1")) is False


def test_a_release_of_the_current_hold_is_true_and_removes_the_mark() -> None:
    marks, _ = _marks()
    marks.apply_now(MarkOp("hold", KEY, seconds=3.0, token="t1"))
    assert marks.apply_now(MarkOp("release", KEY, token="t1")) is True
    assert marks.apply_now(MarkOp("take", KEY)) is False  # nothing left to take
    # No mark at all: nothing says otherwise, the event goes.
    assert marks.apply_now(MarkOp("release", KEY, token="t9")) is True


def test_a_newer_hold_replaces_the_older_one() -> None:
    marks, _ = _marks()
    marks.apply_now(MarkOp("hold", KEY, seconds=3.0, token="old"))
    marks.apply_now(MarkOp("hold", KEY, seconds=3.0, token="new"))
    assert marks.apply_now(MarkOp("release", KEY, token="old")) is False
    assert marks.apply_now(MarkOp("release", KEY, token="new")) is True


def test_marks_expire_a_margin_after_their_delay() -> None:
    marks, clock = _marks()
    other = KEY._replace(channel="other")
    marks.apply_now(MarkOp("hold", KEY, seconds=3.0, token="t1"))
    marks.apply_now(MarkOp("hold", other, seconds=3.0, token="t2"))
    marks.apply_now(MarkOp("take", other))
    clock.advance(3.0 + MemoryHeldMarks.MARGIN - 0.1)
    assert marks.apply_now(MarkOp("take", KEY)) is True  # still there
    clock.advance(0.2)
    assert marks.apply_now(MarkOp("take", KEY)) is False
    assert marks.apply_now(MarkOp("take", other)) is False  # the taken mark went too


def test_apply_keeps_the_order_of_its_operations() -> None:
    marks, _ = _marks()
    ops = [
        MarkOp("hold", KEY, seconds=1.0, token="t1"),
        MarkOp("take", KEY),
        MarkOp("take", KEY),
        MarkOp("release", KEY, token="t1"),
    ]
    assert asyncio.run(marks.apply(ops)) == [True, True, False, False]
