"""Writing one frame to many subscribers (clarion.hub.fanout.write_to_all)."""

from __future__ import annotations

from clarion.hub.fanout import Writer, write_to_all
from tests.support.fakes import BrokenTransport, FakeSubscriber

FRAME = b"\x81\x05hello"


def table(*subs: FakeSubscriber) -> dict[FakeSubscriber, Writer]:
    """The hub's channel table: each subscriber with its transport's bound write."""
    return {sub: sub.transport.write for sub in subs}


def test_every_subscriber_gets_the_same_bytes_once() -> None:
    subs = [FakeSubscriber(f"1.{n}") for n in range(4)]

    assert write_to_all(table(*subs), FRAME, None) == 4

    for sub in subs:
        assert len(sub.transport.written) == 1
        assert sub.transport.written[0] is FRAME  # the very object: no copy per subscriber


def test_the_excluded_socket_is_skipped_and_not_counted() -> None:
    sender, a, b = FakeSubscriber("1.1"), FakeSubscriber("1.2"), FakeSubscriber("1.3")

    assert write_to_all(table(a, sender, b), FRAME, "1.1") == 2

    assert sender.transport.written == []
    assert a.transport.written == [FRAME] and b.transport.written == [FRAME]


def test_an_exclusion_that_matches_nobody_reaches_everyone() -> None:
    subs = [FakeSubscriber("1.1"), FakeSubscriber("1.2")]
    assert write_to_all(table(*subs), FRAME, "9.9") == 2
    assert all(sub.transport.written == [FRAME] for sub in subs)


def test_no_subscribers_no_writes() -> None:
    assert write_to_all({}, FRAME, None) == 0
    assert write_to_all({}, FRAME, "1.1") == 0


def test_frames_arrive_in_the_order_they_were_written() -> None:
    sub = FakeSubscriber("1.1")
    subscribers = table(sub)
    frames = [b"\x81\x01" + bytes([ord("a") + n]) for n in range(5)]
    for frame in frames:
        write_to_all(subscribers, frame, None)
    assert sub.transport.written == frames


def test_a_broken_subscriber_is_skipped_and_reported_and_the_rest_get_the_frame() -> None:
    before, after = FakeSubscriber("1.1"), FakeSubscriber("1.3")
    broken = FakeSubscriber("1.2", BrokenTransport())
    failed: list[FakeSubscriber] = []

    assert write_to_all(table(before, broken, after), FRAME, None, failed.append) == 2

    assert before.transport.written == [FRAME]  # once: not written again on resuming
    assert after.transport.written == [FRAME]
    assert failed == [broken]


def test_several_broken_subscribers_with_an_exclusion() -> None:
    subs = [FakeSubscriber(f"1.{n}") for n in range(6)]
    subs[1] = FakeSubscriber("1.1", BrokenTransport())
    subs[4] = FakeSubscriber("1.4", BrokenTransport())
    failed: list[FakeSubscriber] = []

    # 1.3 is the sender: skipped, and neither counted nor reported.
    assert write_to_all(table(*subs), FRAME, "1.3", failed.append) == 3

    assert failed == [subs[1], subs[4]]
    assert [len(sub.transport.written) for sub in subs] == [1, 0, 1, 0, 0, 1]
