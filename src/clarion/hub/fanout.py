"""Write one frame to many subscribers.

The frame is already encoded; each subscriber costs one ``transport.write`` of the same
bytes, with no await, no allocation and no per-subscriber check. A subscriber that stops
reading is caught by its transport instead: past the write-buffer bound the transport
calls the connection's ``pause_writing``, which closes it right after the fan-out, so it
never stalls or bloats the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...


class Subscriber(Protocol):
    """What the hub needs of a connection: its socket id, its transport, and a way out."""

    socket_id: str

    @property
    def transport(self) -> Transport: ...

    def disconnect(self, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code`` and close with the same code."""


Writer = Callable[[bytes], None]


def write_to_all(
    subscribers: Mapping[Subscriber, Writer], frame: bytes, exclude: str | None
) -> int:
    """Write ``frame`` to every subscriber except socket ``exclude``; return how many got it.

    ``subscribers`` maps each subscriber to its transport's bound ``write``, so the loop
    is one call per subscriber and nothing else.
    """
    if exclude is None:
        for write in subscribers.values():
            write(frame)
        return len(subscribers)
    count = 0
    for sub, write in subscribers.items():
        if sub.socket_id != exclude:
            write(frame)
            count += 1
    return count
