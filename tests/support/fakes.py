"""Stand-ins for the I/O edge in unit tests: a connection as the hub sees it (a socket id,
a transport, a way out) with a transport that records what is written, and a reader for
the server frames it records."""

from __future__ import annotations

import json
from typing import Any


class FakeTransport:
    """Keeps every write, in order, as the very bytes object it was given."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False


class BrokenTransport(FakeTransport):
    """A transport whose peer has gone: every write raises."""

    def write(self, data: bytes) -> None:
        raise ConnectionResetError("the peer has gone")

    def is_closing(self) -> bool:
        return True


class FakeSubscriber:
    """What the hub needs of a connection (``clarion.hub.fanout.Subscriber``)."""

    def __init__(self, socket_id: str, transport: FakeTransport | None = None) -> None:
        self.socket_id = socket_id
        self.transport = transport if transport is not None else FakeTransport()
        self.disconnected: list[tuple[int, str]] = []

    def disconnect(self, code: int, message: str) -> None:
        self.disconnected.append((code, message))

    @property
    def frames(self) -> list[dict[str, Any]]:
        """What this subscriber was sent, decoded."""
        return [decode_frame(frame) for frame in self.transport.written]

    def __repr__(self) -> str:
        return f"FakeSubscriber({self.socket_id!r})"


def decode_frame(frame: bytes) -> dict[str, Any]:
    """The JSON of an unmasked server text frame (as ``clarion.protocol.messages`` builds)."""
    assert frame[0] == 0x81, "not a final text frame"
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    message: dict[str, Any] = json.loads(frame[start:])
    return message
