"""A server's connections in this process: a real Node's context (memory adapter) and
Connection objects on a fake transport that records what they write, for feeding bytes
the way the event loop would without a socket (the fuzzers, peer-address rules)."""

from __future__ import annotations

import asyncio
from typing import Any

from clarion import config
from clarion.server.connection import Connection
from clarion.server.node import Node

APP_ENV = {"CLARION_APP_ID": "1", "CLARION_APP_KEY": "app-key", "CLARION_APP_SECRET": "app-secret"}


class RecordingTransport(asyncio.Transport):
    """What a connection wrote, and whether it closed or aborted its socket."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        super().__init__()
        self.peer = peer
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.eof = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def node(toml: dict[str, Any] | None = None, **server: Any) -> Node:
    """A Node (not listening) with app 1 and the given ``[server]`` settings; call inside
    a running event loop."""
    settings = config.load(None, env=APP_ENV)
    for name, value in server.items():
        setattr(settings.server, name, value)
    for name, value in (toml or {}).items():
        setattr(settings.apps[0], name, value)
    return Node(settings)


def open_connection(
    owner: Node, peer: tuple[str, int] = ("127.0.0.1", 50000)
) -> tuple[Connection, RecordingTransport]:
    conn = Connection(owner.ctx)
    transport = RecordingTransport(peer)
    conn.connection_made(transport)
    return conn, transport
