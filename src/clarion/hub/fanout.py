"""Write frames to many subscribers: one write per connection per turn of the event loop.

The frame is already encoded. A fan-out does not write it: it queues it for each
subscriber in the :class:`Outbox`, and the outbox writes, once the loop has run this
turn's callbacks, each connection's frames as one ``transport.write`` (joined into one
bytes object when there are several). Under load several publishes land in one turn
(pipelined HTTP publishes, a batch of cluster messages, client events), and a
subscriber then costs one system call for all of them instead of one per frame: the
write, not the Python around it, is what a fan-out spends its time on.

A quiet server (the last turn that had a fan-out had only one) writes a turn's first
fan-out at once, one write per subscriber, as before coalescing: queueing a lone frame
would only add the list and the flush. From a turn's second fan-out on, and for every
fan-out of a turn that follows a busy one, frames are queued.

Order. A connection's frames leave in the order they were queued, exactly once, across
channels: they are in one list per connection. A frame of the connection's own (a pong,
a subscription_succeeded, an error) goes through :meth:`Outbox.send`, which writes the
queued frames first. The transport then keeps the order as it always did.

Back-pressure is the transport's, as before: the flush writes into it, a subscriber that
stops reading fills it past the write-buffer bound, the transport calls the connection's
``pause_writing`` and the connection closes with 4100 right after. What the outbox holds
for a connection is at most one turn's frames: it is emptied at the end of every turn.

The native accelerator (:mod:`clarion._speedups`, C) does the queueing loop and the
flush with no Python frame per subscriber; the pure-Python code below does the same
and is used when the extension is not built or ``CLARION_NO_EXTENSIONS=1`` is set
(see :mod:`clarion.speedups`).

A write can still raise: a frame may reach a socket whose transport is already closed
(uvloop raises ``RuntimeError``) while its leave is on its way, through another node's
publish. That subscriber's frames are dropped, the others are written all the same, and
the hub is told (``failed``) so that it removes it.

Outside a running event loop (the hub driven by hand) nothing waits for the end of a
turn: a fan-out writes at once, one write per subscriber.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from clarion import speedups


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...


class Subscriber(Protocol):
    """What the hub needs of a connection: its socket id, its transport, and a way out."""

    socket_id: str

    @property
    def transport(self) -> Transport: ...

    def disconnect(self, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code`` and close with the same code."""


Writer = Callable[[bytes], None]
Failed = Callable[[Subscriber], None]
# subscriber -> the frames queued for it this turn, in order
Pending = dict[Subscriber, list[bytes]]


def _queue(
    pending: Pending, subscribers: Mapping[Subscriber, Writer], frame: bytes, exclude: str | None
) -> int:
    """Queue ``frame`` for every subscriber except socket ``exclude``; return how many."""
    get = pending.get
    if exclude is None:
        for sub in subscribers:
            frames = get(sub)
            if frames is None:
                pending[sub] = [frame]
            else:
                frames.append(frame)
        return len(subscribers)
    count = 0
    for sub in subscribers:
        if sub.socket_id != exclude:
            frames = get(sub)
            if frames is None:
                pending[sub] = [frame]
            else:
                frames.append(frame)
            count += 1
    return count


def _flush(pending: Pending) -> list[Subscriber] | None:
    """Write each subscriber's frames as one write; return those whose write raised."""
    failed: list[Subscriber] | None = None
    for sub, frames in pending.items():
        try:
            sub.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except Exception:
            if failed is None:
                failed = [sub]
            else:
                failed.append(sub)
    return failed


Queue = Callable[[Pending, dict[Subscriber, Writer], bytes, str | None], int]
Flush = Callable[[Pending], list[Subscriber] | None]


class Outbox:
    """The frames queued this turn of the loop, per connection, and their flush."""

    __slots__ = ("_failed", "_flush", "_loop", "_pending", "_queue", "_quiet", "_turn", "native")

    def __init__(self, failed: Failed | None = None, native: bool | None = None) -> None:
        """``failed`` is told of a subscriber whose write raised. ``native``: use the
        accelerator (True), the pure-Python code (False), or the accelerator if it is
        built and not disabled (None, the default; see :mod:`clarion.speedups`)."""
        module = speedups.load() if native is None else speedups.require() if native else None
        self.native = module is not None
        self._queue: Queue = module.queue if module is not None else _queue
        self._flush: Flush = module.flush if module is not None else _flush
        self._pending: Pending = {}
        self._failed = failed
        # The loop a flush is scheduled on (None: none is).
        self._loop: asyncio.AbstractEventLoop | None = None
        # Fan-outs in this turn so far, and whether the last turn that had any had only
        # one (quiet: this turn's first fan-out is written at once, see write_to_all).
        self._turn = 0
        self._quiet = True

    def write_to_all(
        self, subscribers: dict[Subscriber, Writer], frame: bytes, exclude: str | None
    ) -> int:
        """Queue ``frame`` for every subscriber except socket ``exclude`` (written at the
        end of this turn); return how many will get it.

        When the last turn with a fan-out had only one (a quiet server: a frame now and
        then), the first fan-out of a turn is written at once instead, one write per
        subscriber as before coalescing: queueing it would only add the list and the
        flush. Nothing is queued before it in this turn, so the order holds; a second
        fan-out in the same turn is queued, and the turn counts as busy.
        """
        if self._loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven by hand: nothing would flush, so write now
                return write_to_all(subscribers, frame, exclude, self._failed)
            loop.call_soon(self.flush)
            self._loop = loop
            self._turn = 1
            if self._quiet:
                return write_to_all(subscribers, frame, exclude, self._failed)
        else:
            self._turn += 1
        return self._queue(self._pending, subscribers, frame, exclude)

    def send(self, sub: Subscriber, data: bytes) -> None:
        """Write a frame of ``sub``'s own, after the fan-out frames queued for it."""
        frames = self._pending.pop(sub, None) if self._pending else None
        if frames is None:
            sub.transport.write(data)
        else:
            frames.append(data)
            sub.transport.write(b"".join(frames))

    def queued(self, sub: Subscriber) -> int:
        """How many frames wait for ``sub`` (tests read it)."""
        frames = self._pending.get(sub)
        return 0 if frames is None else len(frames)

    def flush(self) -> None:
        """Write every queued frame: one write per connection."""
        self._loop = None
        self._quiet = self._turn <= 1
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        failed = self._flush(pending)
        if failed is not None and self._failed is not None:
            for sub in failed:
                self._failed(sub)


def write_to_all(
    subscribers: Mapping[Subscriber, Writer],
    frame: bytes,
    exclude: str | None,
    failed: Failed | None = None,
) -> int:
    """Write ``frame`` at once to every subscriber except socket ``exclude``; return how
    many got it (a quiet turn's first fan-out, or the hub driven outside an event loop).

    ``subscribers`` maps each subscriber to its transport's bound ``write``, so the loop
    is one call per subscriber and nothing else. A subscriber whose write raises is
    skipped and passed to ``failed`` once the loop is over; the others get the frame all
    the same. The common case pays nothing for this: the loop is guarded once, not per
    subscriber, and resumed after the one that failed.
    """
    write: Writer | None = None
    if exclude is None:
        try:
            for write in subscribers.values():
                write(frame)
        except Exception:
            # ``write`` is the one that raised: go on after it.
            return _resume(subscribers, frame, exclude, write, failed)
        return len(subscribers)
    count = 0
    try:
        for sub, write in subscribers.items():
            if sub.socket_id != exclude:
                write(frame)
                count += 1
    except Exception:
        return _resume(subscribers, frame, exclude, write, failed)
    return count


def _resume(
    subscribers: Mapping[Subscriber, Writer],
    frame: bytes,
    exclude: str | None,
    broken: Writer | None,
    failed: Failed | None,
) -> int:
    """The rest of a fan-out whose write ``broken`` raised: the subscribers before it got
    the frame, those after it get it now, one guarded write each."""
    count = 0
    before = True
    gone: list[Subscriber] = []
    for sub, write in subscribers.items():
        if before:
            if write is broken:
                before = False
                gone.append(sub)
            elif sub.socket_id != exclude:
                count += 1
            continue
        if sub.socket_id == exclude:
            continue
        try:
            write(frame)
        except Exception:
            gone.append(sub)
            continue
        count += 1
    if failed is not None:
        # After the loop: ``failed`` may remove the subscriber from ``subscribers``.
        for sub in gone:
            failed(sub)
    return count
