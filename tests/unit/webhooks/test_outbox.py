"""The outbox with a fake clock and a fake receiver: decide, batch, sign, retry, close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import pytest

from clarion.cluster.interfaces import HeldMarks, JobStore, MarkOp
from clarion.config import AppConfig, WebhookSettings, WebhookTarget
from clarion.protocol import webhooks as shapes
from clarion.protocol.signing import sign
from clarion.webhooks import Outbox
from clarion.webhooks.delivery import (
    FIRST_RETRY,
    USER_AGENT,
    Job,
    decode_job,
    encode_job,
    envelope,
)
from clarion.webhooks.stores import MemoryJobStore, job_events
from tests.unit.webhooks.fakes import HANG, FakeClock, FakePoster, Request

URL = "http://receiver.test/hooks?token=s3cret"
OCCUPIED = shapes.channel_event("channel_occupied", "room")
VACATED = shapes.channel_event("channel_vacated", "room")
ADDED = shapes.member_event("member_added", "presence-room", "u1")


def _app(
    *targets: WebhookTarget, delay: float = 0.0, window: float = 0.0
) -> Callable[[str], AppConfig | None]:
    config = AppConfig(
        id="1",
        key="app-key",
        secret="app-secret",
        webhooks=list(targets) or [_target()],
        webhook_delay=delay,
        webhook_batch_window=window,
    )
    return lambda app_id: config if app_id == "1" else None


def _target(*types: str, url: str = URL, prefix: str | None = None) -> WebhookTarget:
    return WebhookTarget(
        url=url,
        event_types=list(types or shapes.EVENT_TYPES),
        channel_prefix=prefix,
        headers={"X-Extra": "yes", "X-Pusher-Key": "forged"},
    )


class Rig:
    def __init__(
        self,
        app: Callable[[str], AppConfig | None],
        *script: str | None,
        store: JobStore | None = None,
        marks: HeldMarks | None = None,
        clock: FakeClock | None = None,
        **settings: float,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.poster = FakePoster(*script)
        options = {"timeout": 5.0, "retry_for": 300.0, "shutdown_deadline": 1.0, **settings}
        self.outbox = Outbox(
            app,
            msgspec.convert(options, WebhookSettings),
            clock=self.clock,
            store=store,
            marks=marks,
            poster=self.poster,
        )

    async def request(self) -> Request:
        return await asyncio.wait_for(self.poster.requests.get(), 5.0)

    async def retry_scheduled(self) -> float:
        """Wait for the next timer (a retry's wake-up); seconds until it fires."""
        await asyncio.wait_for(self.clock.added.wait(), 5.0)
        self.clock.added.clear()
        assert self.clock.last is not None
        return self.clock.last.when - self.clock.now()

    async def counts(self) -> tuple[int, int, int, int]:
        status = await self.outbox.status("1")
        return status["sent"], status["failed"], status["retrying"], status["dropped"]


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_events_of_a_window_arrive_as_one_signed_request() -> None:
    rig = Rig(_app(window=0.5))
    second = shapes.channel_event("channel_occupied", "other")

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        rig.outbox.emit("1", second)
        rig.clock.advance(0.4)
        assert rig.poster.requests.empty()
        rig.clock.advance(0.1)
        request = await rig.request()
        assert request.url == URL
        assert msgspec.json.decode(request.body) == {
            "time_ms": int(rig.clock.now() * 1000),
            "events": [OCCUPIED, second],
        }
        headers = request.headers
        assert headers["X-Pusher-Key"] == "app-key"  # the configured extra cannot forge it
        assert headers["X-Pusher-Signature"] == sign("app-secret", request.body)
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == USER_AGENT
        assert headers["X-Extra"] == "yes"
        assert await rig.outbox.close() == 0
        assert rig.poster.closed
        assert await rig.counts() == (2, 0, 0, 0)

    run(main)


def test_each_target_gets_the_events_it_wants() -> None:
    occupied_only = _target("channel_occupied", url="http://a.test/")
    presence = _target(url="http://b.test/", prefix="presence-")
    rig = Rig(_app(occupied_only, presence))

    async def main() -> None:
        assert rig.outbox.wants("1", "member_added")
        assert not rig.outbox.wants("2", "member_added")  # no such app
        rig.outbox.emit("1", OCCUPIED)
        rig.outbox.emit("1", ADDED)
        got = sorted([await rig.request(), await rig.request()], key=lambda r: r.url)
        assert [(r.url, msgspec.json.decode(r.body)["events"]) for r in got] == [
            ("http://a.test/", [OCCUPIED]),
            ("http://b.test/", [ADDED]),
        ]
        await rig.outbox.close()

    run(main)


def test_a_failed_request_is_retried_with_backoff_and_signed_afresh() -> None:
    rig = Rig(_app(), "HTTP 500", "HTTP 503", None)

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        first = await rig.request()
        gap = await rig.retry_scheduled()
        assert FIRST_RETRY * 0.5 <= gap <= FIRST_RETRY  # jitter below the backoff
        assert await rig.counts() == (0, 1, 1, 0)
        rig.clock.advance(gap - 0.01)
        assert rig.poster.requests.empty()
        rig.clock.advance(0.01)
        second = await rig.request()
        gap = await rig.retry_scheduled()
        assert FIRST_RETRY <= gap <= 2 * FIRST_RETRY  # doubled
        rig.clock.advance(gap)
        third = await rig.request()
        assert await rig.outbox.close() == 0
        assert await rig.counts() == (1, 2, 0, 0)
        bodies = [msgspec.json.decode(r.body) for r in (first, second, third)]
        assert all(body["events"] == [OCCUPIED] for body in bodies)
        assert len({body["time_ms"] for body in bodies}) == 3
        assert all(
            r.headers["X-Pusher-Signature"] == sign("app-secret", r.body)
            for r in (first, second, third)
        )

    run(main)


def test_a_request_failing_past_the_retry_window_is_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(_app(), "HTTP 500", "HTTP 500", retry_for=1.2)  # 2nd gap >= 1 s

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        await rig.request()
        rig.clock.advance(await rig.retry_scheduled())
        await rig.request()
        await rig.outbox.close()
        assert await rig.counts() == (0, 2, 0, 1)

    run(main)
    assert "given up after 2 attempts (HTTP 500): 1 event(s) lost" in caplog.text
    assert "token=****" in caplog.text and "s3cret" not in caplog.text


def test_close_counts_the_events_it_could_not_deliver() -> None:
    rig = Rig(_app(), HANG, concurrency=1, shutdown_deadline=0.1)
    batch = [shapes.channel_event("channel_occupied", f"c{i}") for i in range(3)]

    async def main() -> None:
        for event in batch:
            rig.outbox.emit("1", event)
        await rig.request()  # the first hangs, the others wait behind it
        assert rig.outbox.queue_sizes() == {"1": 3}
        assert (await rig.outbox.status("1"))["targets"][0]["queued"] == 3
        assert await rig.outbox.close() == 3
        assert (await rig.counts())[3] == 3
        assert rig.poster.closed

    run(main)


def test_close_gives_a_pending_retry_its_last_chance() -> None:
    rig = Rig(_app(), "HTTP 500", None)

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        await rig.request()
        await rig.retry_scheduled()
        assert await rig.outbox.close() == 0  # no clock advance: brought forward
        assert await rig.counts() == (1, 1, 0, 0)

    run(main)


class DurableStore(JobStore):
    """A store that outlives the process (as Redis does), kept in memory for the test."""

    def __init__(self, clock: FakeClock) -> None:
        self.jobs = MemoryJobStore(clock.now)

    async def add(self, queue: str, payload: bytes, limit: int, limit_bytes: int) -> int:
        return await self.jobs.add(queue, payload, limit, limit_bytes)

    async def claim(self, queue: str, count: int, lease: float) -> list[tuple[str, bytes]]:
        return await self.jobs.claim(queue, count, lease)

    async def done(self, queue: str, job_id: str) -> None:
        await self.jobs.done(queue, job_id)

    async def retry(self, queue: str, job_id: str, payload: bytes, delay: float) -> None:
        await self.jobs.retry(queue, job_id, payload, delay)

    async def size(self, queue: str) -> int:
        return await self.jobs.size(queue)


def test_with_a_durable_store_close_loses_nothing_and_leaves_the_jobs_there() -> None:
    clock = FakeClock()
    store = DurableStore(clock)
    rig = Rig(_app(), HANG, store=store, clock=clock, concurrency=1, shutdown_deadline=0.1)

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        rig.outbox.emit("1", VACATED)
        await rig.request()
        assert rig.outbox.queue_sizes() == {"1": 1}  # in flight here; Redis has the rest
        assert await rig.outbox.close() == 0
        assert store.jobs.size_now("1:0") == 2  # delivered after a restart

    run(main)


def test_a_quick_opposite_event_cancels_a_held_one() -> None:
    rig = Rig(_app(delay=3.0))

    async def main() -> None:
        rig.outbox.emit("1", VACATED)
        rig.clock.advance(1.0)
        rig.outbox.emit("1", OCCUPIED)  # a reload: neither goes
        rig.clock.advance(5.0)
        rig.outbox.emit("1", VACATED)
        rig.clock.advance(3.0)  # the delay runs out: it goes
        request = await rig.request()
        assert msgspec.json.decode(request.body)["events"] == [VACATED]
        assert await rig.outbox.close() == 0
        assert await rig.counts() == (1, 0, 0, 0)

    run(main)


REMOVED = shapes.member_event("member_removed", "presence-room", "u1")
OFFLINE = shapes.user_event("user_offline", "u1")
ONLINE = shapes.user_event("user_online", "u1")
PAIRS = [
    (REMOVED, ADDED, ("member_added",)),
    (REMOVED, ADDED, ("member_removed",)),
    (REMOVED, ADDED, ("member_added", "member_removed")),
    (OFFLINE, ONLINE, ("user_online",)),
    (OFFLINE, ONLINE, ("user_offline",)),
    (VACATED, OCCUPIED, ("channel_occupied",)),
]


@pytest.mark.parametrize(("held", "arrival", "wanted"), PAIRS)
def test_a_reload_cancels_the_pair_for_a_target_that_wants_only_one_of_them(
    held: shapes.WebhookEvent, arrival: shapes.WebhookEvent, wanted: tuple[str, ...]
) -> None:
    marker = shapes.channel_event("cache_miss", "elsewhere")
    rig = Rig(_app(_target(*wanted, "cache_miss"), delay=3.0))

    async def main() -> None:
        rig.outbox.emit("1", held)
        rig.clock.advance(1.0)
        rig.outbox.emit("1", arrival)  # a reload: neither goes, to any target
        rig.clock.advance(5.0)
        rig.outbox.emit("1", marker)  # comes after anything the reload would send
        request = await rig.request()
        assert msgspec.json.decode(request.body)["events"] == [marker]
        assert rig.poster.requests.empty()
        # A departure for good still goes, after the delay, where it is wanted.
        rig.outbox.emit("1", held)
        rig.clock.advance(3.0)
        rig.outbox.emit("1", marker)
        events = msgspec.json.decode((await rig.request()).body)["events"]
        if held["name"] in wanted:
            assert events == [held]
            events = msgspec.json.decode((await rig.request()).body)["events"]
        assert events == [marker]
        assert await rig.outbox.close() == 0

    run(main)


def test_a_queued_job_keeps_its_events_encoded_and_a_stored_one_counts_them() -> None:
    job = Job([ADDED, OCCUPIED])
    payload = encode_job(URL, job)
    assert payload.startswith(b'{"k":2,') and job_events(payload) == 2
    stored = decode_job(payload, "7", URL)
    assert stored is not None and stored.count == 2 and stored.id == "7"
    assert isinstance(stored.events, msgspec.Raw)  # no object tree per event
    assert msgspec.json.decode(envelope(5, stored)) == {"time_ms": 5, "events": [ADDED, OCCUPIED]}
    assert decode_job(payload, "7", "http://elsewhere.test/") is None
    assert decode_job(b"{not json", "7", URL) is None
    # A job stored before jobs carried their count (a durable queue across an upgrade).
    older = msgspec.json.encode({"u": URL, "e": [ADDED, ADDED, ADDED], "f": 1.5, "n": 2})
    stored = decode_job(older, "8", URL)
    assert stored is not None and (stored.count, stored.first_attempt, stored.attempts) == (
        3,
        1.5,
        2,
    )


class ClusterMarks(HeldMarks):
    """Marks of a pretend cluster that answers when the test opens ``gate``; another
    node held a channel_vacated if ``taken``."""

    def __init__(self, taken: bool) -> None:
        self.taken = taken
        self.gate = asyncio.Event()

    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        await self.gate.wait()
        return [
            op.kind != "take" or (self.taken and op.key.name == "channel_vacated") for op in ops
        ]


@pytest.mark.parametrize("taken", [False, True])
def test_events_wait_in_order_behind_the_cluster_answer(taken: bool) -> None:
    marks = ClusterMarks(taken)
    rig = Rig(_app(delay=3.0, window=0.5), marks=marks)

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)  # was a vacated held by another node? ask
        rig.outbox.emit("1", ADDED)  # must not overtake it
        rig.clock.advance(1.0)
        assert rig.clock.pending() == 0  # nothing is batched yet
        marks.gate.set()
        await asyncio.wait_for(rig.clock.added.wait(), 5.0)  # the batch window opened
        rig.clock.advance(0.5)
        request = await rig.request()
        events = msgspec.json.decode(request.body)["events"]
        assert events == ([ADDED] if taken else [OCCUPIED, ADDED])
        await rig.outbox.close()

    run(main)


@pytest.mark.parametrize("moved", [False, True])
def test_after_a_reconfiguration_waiting_jobs_follow_their_url(moved: bool) -> None:
    configs = {"1": _app()("1")}
    rig = Rig(configs.get, "HTTP 500")
    second = shapes.channel_event("channel_occupied", "second")

    async def main() -> None:
        rig.outbox.emit("1", OCCUPIED)
        await rig.request()
        gap = await rig.retry_scheduled()  # waiting in the store, due later
        url = "http://moved.test/" if moved else URL
        configs["1"] = _app(_target("channel_occupied", url=url))("1")
        rig.outbox.reconfigure("1")
        assert not rig.outbox.wants("1", "member_added")  # the new targets' event types
        rig.clock.advance(gap)
        rig.outbox.emit("1", second)
        requests = [await rig.request() for _ in range(1 if moved else 2)]
        got = [(r.url, msgspec.json.decode(r.body)["events"]) for r in requests]
        if moved:  # nowhere to send the old one: dropped
            assert got == [(url, [second])]
            assert await rig.counts() == (1, 0, 0, 1)
        else:
            assert got == [(URL, [OCCUPIED]), (URL, [second])]
            assert await rig.counts() == (2, 0, 0, 0)
        assert await rig.outbox.close() == 0

    run(main)


def test_an_app_without_webhooks_costs_nothing_and_sends_nothing() -> None:
    rig = Rig(lambda app_id: None)

    async def main() -> None:
        assert not rig.outbox.wants("9", "channel_occupied")
        rig.outbox.emit("9", OCCUPIED)
        rig.outbox.emit("9", VACATED)
        assert rig.clock.pending() == 0 and rig.outbox.queue_sizes() == {"9": 0}
        assert await rig.outbox.status("9") == {
            "sent": 0,
            "failed": 0,
            "retrying": 0,
            "dropped": 0,
            "targets": [],
        }
        assert await rig.outbox.close() == 0
        assert rig.poster.requests.empty()

    run(main)
