"""A connection on a recording transport, for the unit tests of the I/O edge: a node built
from settings (nothing listens), one :class:`Connection` per ``open_connection``, and a
transport that keeps what is written and whether reading is paused."""

from __future__ import annotations

import os
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from clarion.config import AppConfig, ServerSettings, Settings
from clarion.server.connection import Connection
from clarion.server.node import Node

APP = {"id": "1", "key": "app-key", "secret": "app-secret", "client_events": True}
UPGRADE = (
    b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Transport:
    """Records writes, pause/resume and the end of the socket."""

    def __init__(self, peer: str = "10.0.0.1") -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.reading = True
        self.pauses = 0
        self.resumes = 0
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.pauses += 1
        self.reading = False

    def resume_reading(self) -> None:
        self.resumes += 1
        self.reading = True

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    @property
    def data(self) -> bytes:
        return b"".join(self.written)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def install(self, monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> Clock:
        """Make it the ``time`` these modules read."""
        namespace = SimpleNamespace(monotonic=self.monotonic, perf_counter=self.monotonic)
        for module in modules:
            monkeypatch.setattr(module, "time", namespace)
        return self


def build_node(app: dict[str, Any] | None = None, **server: Any) -> Node:
    """A node serving app 1 (with ``app``'s settings) under these ``[server]`` settings."""
    config = AppConfig(**{**APP, **(app or {})})
    return Node(Settings(server=ServerSettings(**server), apps=[config]))


def open_connection(node: Node, peer: str = "10.0.0.1") -> tuple[Connection, Transport]:
    conn = Connection(node.ctx)
    transport = Transport(peer)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def upgraded(node: Node) -> tuple[Connection, Transport]:
    """A connection past its handshake (101 and connection_established written)."""
    conn, transport = open_connection(node)
    conn.data_received(UPGRADE)
    assert conn.app is not None, transport.data
    transport.written.clear()
    return conn, transport


def client_frame(payload: bytes) -> bytes:
    """One masked text frame, as a client sends it."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + body


def server_texts(data: bytes) -> list[bytes]:
    """The payloads of the (unmasked) text frames in ``data``; stops at a close frame."""
    texts = []
    while data:
        opcode, n = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if n == 126:
            n, start = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, start = int.from_bytes(data[2:10], "big"), 10
        if opcode == 0x1:
            texts.append(data[start : start + n])
        data = data[start + n :]
    return texts


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in ``data`` (unmasked), if any."""
    while data:
        opcode, n = data[0] & 0x0F, data[1] & 0x7F
        start = 2 if n < 126 else 4 if n == 126 else 10
        if n >= 126:
            n = int.from_bytes(data[2:start], "big")
        if opcode == 0x8:
            return int.from_bytes(data[start : start + 2], "big")
        data = data[start + n :]
    return None
