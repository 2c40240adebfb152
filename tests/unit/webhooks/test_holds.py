"""Holding back vacated/removed/offline events: the delay, its cancellation, the marks."""

from __future__ import annotations

import asyncio

from clarion.cluster.interfaces import HeldKey, HeldMarks, MarkOp
from clarion.protocol.webhooks import WebhookEvent, channel_event, user_event
from clarion.webhooks.holds import RECHECK, Holds, held_key
from clarion.webhooks.stores import MemoryHeldMarks
from tests.unit.webhooks.fakes import FakeClock

VACATED = channel_event("channel_vacated", "room")
KEY = held_key("1", "channel_vacated", VACATED)


def _holds() -> tuple[Holds, FakeClock, list[WebhookEvent]]:
    clock = FakeClock()
    sent: list[WebhookEvent] = []
    holds = Holds(MemoryHeldMarks(clock.now), clock, lambda key, event: sent.append(event))
    return holds, clock, sent


def test_the_key_names_the_event_its_channel_and_its_user() -> None:
    assert HeldKey("1", "channel_vacated", "room", "") == KEY
    offline = held_key("1", "user_offline", user_event("user_offline", "u1"))
    assert offline == HeldKey("1", "user_offline", "", "u1")


def test_a_held_event_goes_out_when_its_delay_runs_out() -> None:
    holds, clock, sent = _holds()
    assert not holds.shared
    holds.hold(KEY, VACATED, 3.0)
    assert len(holds) == 1
    clock.advance(2.9)
    assert sent == []
    clock.advance(0.1)
    assert sent == [VACATED] and len(holds) == 0
    clock.advance(60)
    assert sent == [VACATED]  # once


def test_the_opposite_event_within_the_delay_cancels_it() -> None:
    holds, clock, sent = _holds()
    holds.hold(KEY, VACATED, 3.0)
    clock.advance(1.0)
    assert holds.cancel(KEY) is True
    assert holds.cancel(KEY) is False  # only once
    clock.advance(10)
    assert sent == [] and clock.pending() == 0


def test_the_opposite_event_after_the_delay_cancels_nothing() -> None:
    holds, clock, sent = _holds()
    holds.hold(KEY, VACATED, 3.0)
    clock.advance(3.0)
    assert holds.cancel(KEY) is False
    assert sent == [VACATED]


def test_a_cancel_of_another_key_leaves_the_hold_alone() -> None:
    holds, clock, sent = _holds()
    holds.hold(KEY, VACATED, 3.0)
    assert holds.cancel(KEY._replace(channel="elsewhere")) is False
    clock.advance(3.0)
    assert sent == [VACATED]


def test_a_new_hold_of_the_same_event_starts_its_delay_again() -> None:
    holds, clock, sent = _holds()
    first = {**VACATED, "n": 1}
    second = {**VACATED, "n": 2}
    holds.hold(KEY, first, 3.0)
    clock.advance(2.0)
    holds.hold(KEY, second, 3.0)
    clock.advance(2.0)
    assert sent == []
    clock.advance(1.0)
    assert sent == [second]


def test_held_events_go_out_in_the_order_their_delays_run_out() -> None:
    holds, clock, sent = _holds()
    events = [channel_event("channel_vacated", name) for name in ("a", "b", "c")]
    holds.hold(held_key("1", "channel_vacated", events[0]), events[0], 2.0)
    holds.hold(held_key("2", "channel_vacated", events[1]), events[1], 1.0)
    holds.hold(held_key("1", "channel_vacated", events[2]), events[2], 2.0)
    clock.advance(5.0)
    assert sent == [events[1], events[0], events[2]]


def test_close_sends_what_is_held_at_once() -> None:
    holds, clock, sent = _holds()
    holds.hold(KEY, VACATED, 60.0)

    asyncio.run(holds.close(deadline=5.0))
    assert sent == [VACATED] and len(holds) == 0
    assert clock.pending() == 0


class SharedMarks(HeldMarks):
    """Marks of a pretend cluster: each batch waits for ``gate``; answers by kind."""

    def __init__(self) -> None:
        self.answers: dict[str, bool | None] = {"hold": True, "take": False, "release": True}
        self.batches: list[list[MarkOp]] = []
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def apply(self, ops: list[MarkOp]) -> list[bool | None] | None:
        self.batches.append(list(ops))
        self.arrived.set()
        await self.gate.wait()
        return [self.answers[op.kind] for op in ops]  # None: Redis away


def test_with_shared_marks_a_take_answers_later_and_ops_keep_their_order() -> None:
    clock = FakeClock()
    marks = SharedMarks()
    holds = Holds(marks, clock, lambda key, event: None)
    assert holds.shared

    async def main() -> None:
        marks.gate.clear()
        outcome: list[bool] = []
        holds.hold(KEY, VACATED, 3.0)
        await marks.arrived.wait()  # the hold is on its way to the cluster
        holds.take(KEY._replace(channel="b"), outcome.append)
        holds.take(KEY._replace(channel="c"), outcome.append)
        marks.answers["take"] = True
        assert outcome == []  # the cluster has not answered yet
        marks.gate.set()
        await holds.settled()
        assert outcome == [True, True]

    asyncio.run(main())
    kinds = [[op.kind for op in batch] for batch in marks.batches]
    # One batch at a time, in order: the takes wait for the hold, then go together.
    assert kinds == [["hold"], ["take", "take"]]


def test_an_unknown_release_is_asked_again_and_goes_at_shutdown() -> None:
    clock = FakeClock()
    marks = SharedMarks()
    sent: list[WebhookEvent] = []
    holds = Holds(marks, clock, lambda key, event: sent.append(event))
    marks.answers["release"] = None

    async def main() -> None:
        holds.hold(KEY, VACATED, 3.0)
        clock.advance(3.0)  # released: the marks cannot say
        await holds.settled()
        assert sent == [] and len(holds) == 1  # held on
        clock.advance(RECHECK)
        await holds.settled()
        releases = [op for batch in marks.batches for op in batch if op.kind == "release"]
        assert len(releases) == 2 and sent == []
        await holds.close(deadline=0.5)  # at shutdown an unknown is sent
        assert sent == [VACATED]

    asyncio.run(main())


def test_a_release_the_cluster_refuses_is_not_sent() -> None:
    clock = FakeClock()
    marks = SharedMarks()
    sent: list[WebhookEvent] = []
    holds = Holds(marks, clock, lambda key, event: sent.append(event))
    marks.answers["release"] = False  # another node took it, or the channel is busy again

    async def main() -> None:
        holds.hold(KEY, VACATED, 3.0)
        clock.advance(3.0)
        await holds.settled()
        assert sent == [] and len(holds) == 0

    asyncio.run(main())
