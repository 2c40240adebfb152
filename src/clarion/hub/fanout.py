"""Write one frame to many subscribers.

The frame is already encoded; each subscriber costs one ``transport.write`` of the same
bytes, with no await, no allocation and no per-subscriber check. A subscriber that stops
reading is caught by its transport instead: past the write-buffer bound the transport
calls the connection's ``pause_writing``, which closes it right after the fan-out, so it
never stalls or bloats the others.

A write can still raise: a frame may reach a socket whose transport is already closed
(uvloop raises ``RuntimeError``) while its leave is on its way, through another node's
publish. That subscriber is skipped, the fan-out goes on with the next one, and the hub
is told (``failed``) so that it removes it. The common case pays nothing for this: the
loop is guarded once, not per subscriber, and resumed after the one that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol


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


def write_to_all(
    subscribers: Mapping[Subscriber, Writer],
    frame: bytes,
    exclude: str | None,
    failed: Failed | None = None,
) -> int:
    """Write ``frame`` to every subscriber except socket ``exclude``; return how many got it.

    ``subscribers`` maps each subscriber to its transport's bound ``write``, so the loop
    is one call per subscriber and nothing else. A subscriber whose write raises is
    skipped and passed to ``failed``; the others get the frame all the same. (``failed``
    must not change ``subscribers``: it is called in the middle of the loop.)
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
    for sub, write in subscribers.items():
        if before:
            if write is broken:
                before = False
                if failed is not None:
                    failed(sub)
            elif sub.socket_id != exclude:
                count += 1
            continue
        if sub.socket_id == exclude:
            continue
        try:
            write(frame)
        except Exception:
            if failed is not None:
                failed(sub)
            continue
        count += 1
    return count
