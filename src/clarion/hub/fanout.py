"""Write one frame to many subscribers.

The frame is already encoded; each subscriber costs one ``transport.write`` of the same
bytes, with no await and no allocation. A subscriber whose write buffer grows past the
bound (it stopped reading) is reported back and closed by its connection, so it never
stalls or bloats the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class Subscriber(Protocol):
    """What the hub needs of a connection: its socket id, its transport, and a way out."""

    socket_id: str

    @property
    def transport(self) -> Transport: ...

    def overflowed(self) -> None:
        """The write buffer is over the bound: close with a reconnect-class code."""

    def disconnect(self, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code`` and close with the same code."""


def write_to_all(
    subscribers: Iterable[Subscriber], frame: bytes, exclude: str | None, limit: int
) -> int:
    """Write ``frame`` to every subscriber except socket ``exclude``; return how many got it."""
    slow: list[Subscriber] | None = None
    count = 0
    for sub in subscribers:
        if exclude is not None and sub.socket_id == exclude:
            continue
        transport = sub.transport
        transport.write(frame)
        count += 1
        if transport.get_write_buffer_size() > limit:
            if slow is None:
                slow = []
            slow.append(sub)
    if slow:
        # Closing changes the subscriber tables, so it happens after the loop.
        for sub in slow:
            sub.overflowed()
    return count
