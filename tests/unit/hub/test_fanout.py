"""Writing frames to many subscribers (clarion.hub.fanout): at once outside a loop
(write_to_all), and through the outbox, one write per connection per turn of the loop,
in both its pure-Python and its native (clarion._speedups) forms."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from typing import Any

import pytest

from clarion import speedups
from clarion.hub.fanout import Outbox, Writer, write_to_all
from clarion.protocol import messages
from tests.support.fakes import BrokenTransport, FakeSubscriber, split_frames


def _native_built() -> bool:
    try:
        speedups.require()
    except ImportError:
        return False
    return True


# The accelerator's tests run wherever it is built (also under CLARION_NO_EXTENSIONS=1,
# which only stops the server from using it); CI builds it and requires them.
needs_native = pytest.mark.skipif(
    not _native_built() and not os.environ.get("CLARION_REQUIRE_EXTENSIONS"),
    reason="clarion._speedups is not built (no C compiler at install)",
)

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


# --- the outbox: one write per connection per turn of the loop ---------------------------

NATIVE = [
    pytest.param(False, id="python"),
    pytest.param(True, id="native", marks=needs_native),
]


def frame_of(text: str) -> bytes:
    return messages.event("e", "c", text)


def stream_of(sub: FakeSubscriber) -> bytes:
    return b"".join(sub.transport.written)


async def busy(outbox: Outbox) -> None:
    """A turn with two fan-outs (to nobody): the outbox then queues every fan-out of the
    next turn, the first one too."""
    outbox.write_to_all({}, FRAME, None)
    outbox.write_to_all({}, FRAME, None)
    await asyncio.sleep(0)


@pytest.mark.parametrize("native", NATIVE)
def test_frames_of_one_turn_leave_as_one_write_in_publish_order_across_channels(
    native: bool,
) -> None:
    async def main() -> None:
        outbox = Outbox(native=native)
        await busy(outbox)
        a, b, c = FakeSubscriber("1.1"), FakeSubscriber("1.2"), FakeSubscriber("1.3")
        news, chat = table(a, b), table(b, c)
        frames = [frame_of(str(n)) for n in range(6)]
        assert outbox.write_to_all(news, frames[0], None) == 2
        assert outbox.write_to_all(chat, frames[1], None) == 2
        assert outbox.write_to_all(news, frames[2], "1.1") == 1  # a is the sender
        assert outbox.write_to_all(chat, frames[3], None) == 2
        # Nothing is written before the turn ends...
        assert all(sub.transport.written == [] for sub in (a, b, c))
        await asyncio.sleep(0)  # ...and everything once it has: one write each.
        assert a.transport.written == [frames[0]]  # a lone frame goes as it is: no copy
        assert a.transport.written[0] is frames[0]
        assert b.transport.written == [b"".join(frames[:4])]
        assert c.transport.written == [frames[1] + frames[3]]
        # The next turn's frames come after, once.
        outbox.write_to_all(news, frames[4], None)
        outbox.write_to_all(chat, frames[5], None)
        await asyncio.sleep(0)
        assert split_frames(stream_of(b)) == frames
        assert split_frames(stream_of(a)) == [frames[0], frames[4]]
        assert split_frames(stream_of(c)) == [frames[1], frames[3], frames[5]]

    asyncio.run(main())


@pytest.mark.parametrize("native", NATIVE)
def test_a_connections_own_frame_follows_the_fan_out_frames_queued_before_it(
    native: bool,
) -> None:
    async def main() -> None:
        outbox = Outbox(native=native)
        await busy(outbox)
        sub, other = FakeSubscriber("1.1"), FakeSubscriber("1.2")
        subs = table(sub, other)
        first, second, pong = frame_of("1"), frame_of("2"), frame_of("pong")
        outbox.write_to_all(subs, first, None)
        outbox.send(sub, pong)  # a reply decided after `first` was published
        outbox.write_to_all(subs, second, None)
        assert outbox.queued(sub) == 1 and outbox.queued(other) == 2
        await asyncio.sleep(0)
        assert split_frames(stream_of(sub)) == [first, pong, second]
        assert split_frames(stream_of(other)) == [first, second]
        # With nothing queued, a connection's own frame is written at once.
        outbox.send(other, pong)
        assert other.transport.written[-1] is pong

    asyncio.run(main())


@pytest.mark.parametrize("native", NATIVE)
def test_a_write_that_raises_at_the_flush_is_reported_and_the_others_are_written(
    native: bool,
) -> None:
    async def main() -> None:
        failed: list[FakeSubscriber] = []
        outbox = Outbox(failed.append, native=native)
        await busy(outbox)
        before, after = FakeSubscriber("1.1"), FakeSubscriber("1.3")
        broken = FakeSubscriber("1.2", BrokenTransport())
        subs = table(before, broken, after)
        outbox.write_to_all(subs, FRAME, None)
        outbox.write_to_all(subs, FRAME, None)
        await asyncio.sleep(0)
        assert failed == [broken]
        assert before.transport.written == [FRAME + FRAME]
        assert after.transport.written == [FRAME + FRAME]

    asyncio.run(main())


@pytest.mark.parametrize("native", NATIVE)
def test_a_quiet_outbox_writes_a_turns_first_fan_out_at_once_and_queues_the_next(
    native: bool,
) -> None:
    async def main() -> None:
        outbox = Outbox(native=native)
        sub = FakeSubscriber("1.1")
        subs = table(sub)
        first, second, third, pong = (frame_of(t) for t in ("1", "2", "3", "pong"))
        outbox.write_to_all(subs, first, None)  # a quiet start: written at once
        assert sub.transport.written == [first]
        outbox.write_to_all(subs, second, None)  # the turn's second: queued
        outbox.send(sub, pong)
        outbox.write_to_all(subs, third, None)
        assert sub.transport.written == [first, second + pong]
        await asyncio.sleep(0)
        assert split_frames(stream_of(sub)) == [first, second, pong, third]
        # That turn was busy: the next one queues its first fan-out too.
        outbox.write_to_all(subs, first, None)
        assert outbox.queued(sub) == 1
        await asyncio.sleep(0)
        # And a turn with one fan-out makes the outbox quiet again.
        outbox.write_to_all(subs, second, None)
        assert outbox.queued(sub) == 0
        assert split_frames(stream_of(sub)) == [first, second, pong, third, first, second]

    asyncio.run(main())


def test_outside_a_loop_a_fan_out_writes_at_once() -> None:
    failed: list[FakeSubscriber] = []
    outbox = Outbox(failed.append, native=False)
    sub, broken = FakeSubscriber("1.1"), FakeSubscriber("1.2", BrokenTransport())
    assert outbox.write_to_all(table(sub, broken), FRAME, None) == 1
    assert sub.transport.written == [FRAME] and failed == [broken]


@pytest.mark.parametrize("native", NATIVE)
def test_python_and_native_queue_and_flush_alike(native: bool) -> None:
    """The same queue, byte for byte, from many turns of random publishes."""
    rng = random.Random(14)
    subs = [FakeSubscriber(f"1.{n}") for n in range(20)]
    channels = [table(*rng.sample(subs, rng.randint(0, 20))) for _ in range(5)]
    expected: dict[FakeSubscriber, list[bytes]] = {sub: [] for sub in subs}

    async def main() -> None:
        outbox = Outbox(native=native)
        for turn in range(30):
            for n in range(rng.randint(0, 6)):
                channel = rng.choice(channels)
                frame = frame_of(f"{turn}.{n}" + "x" * rng.randint(0, 300))
                exclude = rng.choice([None, None, *(s.socket_id for s in channel)])
                count = outbox.write_to_all(channel, frame, exclude)
                receivers = [s for s in channel if s.socket_id != exclude]
                assert count == len(receivers)
                for sub in receivers:
                    expected[sub].append(frame)
            await asyncio.sleep(0)

    asyncio.run(main())
    for sub in subs:
        assert split_frames(stream_of(sub)) == expected[sub]
        # At most one write per turn, two in a turn that followed a quiet one (its first
        # fan-out written at once).
        assert len(sub.transport.written) <= 2 * 30


# --- real sockets: partial writes, and a slow subscriber among fast ones ---------------


class SocketSubscriber(asyncio.Protocol):
    """The server side of a socket pair, as the hub sees a connection: a slow reader
    fills its transport past the bound, which calls pause_writing, and it is closed
    (as clarion.server.websocket closes one with 4100)."""

    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.overflowed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        asyncio.get_running_loop().call_soon(self.disconnect, 4100, "Over capacity")

    def disconnect(self, code: int, message: str) -> None:
        if not self.overflowed:
            self.overflowed = True
            self.transport.abort()


async def socket_pair(socket_id: str, limit: int) -> tuple[SocketSubscriber, socket.socket]:
    ours, theirs = socket.socketpair()
    # Small kernel buffers: the writes are partial, and the rest waits in the transport.
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    _, sub = await loop.connect_accepted_socket(lambda: SocketSubscriber(socket_id), ours)
    sub.transport.set_write_buffer_limits(high=limit)
    return sub, theirs


async def read_until(sock: socket.socket, size: int, received: bytearray) -> None:
    loop = asyncio.get_running_loop()
    while len(received) < size:
        chunk = await loop.sock_recv(sock, 65536)
        assert chunk, "the server side closed"
        received += chunk


@pytest.mark.parametrize("native", NATIVE)
def test_partial_writes_keep_publish_order_exactly_once(native: bool) -> None:
    async def main() -> None:
        outbox = Outbox(native=native)
        await busy(outbox)
        sub, peer = await socket_pair("1.1", limit=1 << 22)
        subs: dict[Any, Writer] = {sub: sub.transport.write}
        frames = [frame_of(f"{n}:" + "y" * (n * 37 % 3000)) for n in range(400)]
        for n, frame in enumerate(frames):
            outbox.write_to_all(subs, frame, None)
            if n % 7 == 6:
                await asyncio.sleep(0)  # a turn ends: one write of up to 7 frames
        await asyncio.sleep(0)
        # Far more than the kernel took at once: the rest is in the transport's buffer.
        assert sub.transport.get_write_buffer_size() > 0
        received = bytearray()
        await asyncio.wait_for(read_until(peer, sum(map(len, frames)), received), 10)
        assert split_frames(bytes(received)) == frames
        peer.close()
        sub.transport.abort()

    asyncio.run(main())


@pytest.mark.parametrize("native", NATIVE)
def test_a_slow_subscriber_is_cut_off_and_the_fast_ones_get_everything(native: bool) -> None:
    async def main() -> None:
        outbox = Outbox(native=native)
        await busy(outbox)
        limit = 64 * 1024
        slow, slow_peer = await socket_pair("1.0", limit)
        fast = [await socket_pair(f"1.{n}", limit) for n in range(1, 6)]
        subs: dict[Any, Writer] = {slow: slow.transport.write}
        for sub, _ in fast:
            subs[sub] = sub.transport.write
        frames = [frame_of(f"{n}:" + "z" * 200) for n in range(2000)]
        received = [bytearray() for _ in fast]
        total = sum(map(len, frames))
        readers = [
            asyncio.create_task(read_until(peer, total, got))
            for (_, peer), got in zip(fast, received, strict=True)
        ]
        for n, frame in enumerate(frames):
            if slow.overflowed and slow in subs:
                del subs[slow]  # its leave, as the hub does on close
            outbox.write_to_all(subs, frame, None)
            if n % 5 == 4:
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        # The slow one (never read) went over the bound and was cut off...
        assert slow.overflowed
        # ...and every fast one got every frame, in order, once.
        for got in received:
            assert split_frames(bytes(got)) == frames
        for sub, peer in [(slow, slow_peer), *fast]:
            peer.close()
            sub.transport.abort()

    asyncio.run(main())
