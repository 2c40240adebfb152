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
        """What this subscriber was sent, decoded (a write may hold several frames: the
        hub's outbox writes a connection's frames of one loop turn at once)."""
        return [decode_frame(frame) for frame in split_frames(b"".join(self.transport.written))]

    def __repr__(self) -> str:
        return f"FakeSubscriber({self.socket_id!r})"


def split_frames(stream: bytes) -> list[bytes]:
    """The unmasked server frames a byte stream is made of, each as its own bytes."""
    frames = []
    at = 0
    while at < len(stream):
        length = stream[at + 1] & 0x7F
        if length == 126:
            start, length = at + 4, int.from_bytes(stream[at + 2 : at + 4], "big")
        elif length == 127:
            start, length = at + 10, int.from_bytes(stream[at + 2 : at + 10], "big")
        else:
            start = at + 2
        assert start + length <= len(stream), "a frame cut short"
        frames.append(stream[at : start + length])
        at = start + length
    return frames


def decode_frame(frame: bytes) -> dict[str, Any]:
    """The JSON of an unmasked server text frame (as ``clarion.protocol.messages`` builds)."""
    assert frame[0] == 0x81, "not a final text frame"
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    message: dict[str, Any] = json.loads(frame[start:])
    return message
