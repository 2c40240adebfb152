"""What every connection shares with the server: settings, apps, hub, API and the counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clarion.apps import AppRegistry
from clarion.config import ServerSettings
from clarion.hub.channels import Hub
from clarion.server.http_api import HttpApi

if TYPE_CHECKING:
    from clarion.server.connection import Connection


@dataclass
class OpenFiles:
    """The descriptors in use as the admission counts them: its own sockets exactly, the
    rest (listening sockets, Redis, webhooks, logs) as last read from the process."""

    # How many descriptors may be used before the reserve (0: the limit is not read yet):
    # a socket that makes more is in it.
    reserved_from: int = 0
    sockets: int = 0
    others: int = 0
    # When the others were last read (time.monotonic()).
    counted_at: float = -1e9


@dataclass
class Context:
    """Everything a connection needs from the server, shared by all connections."""

    settings: ServerSettings
    registry: AppRegistry
    hub: Hub
    api: HttpApi
    new_socket_id: Callable[[], str]
    connections: set[Connection] = field(default_factory=set)
    connections_per_app: dict[str, int] = field(default_factory=dict)
    # Open connections per app on the other nodes of a cluster (refreshed every second).
    connections_elsewhere: dict[str, int] = field(default_factory=dict)
    connections_per_ip: dict[str, int] = field(default_factory=dict)
    # Sockets in the middle of a request head, per address (server/admission.py).
    unfinished_heads: dict[str, int] = field(default_factory=dict)
    # Sockets still speaking HTTP (not upgraded), oldest first: watched for head and idle
    # timeouts, and the first to go at the open-file limit.
    http_connections: dict[Connection, None] = field(default_factory=dict)
    # Leave-all tasks of closed connections still waiting on the cluster state.
    leaving: set[asyncio.Task[None]] = field(default_factory=set)
    accepting: bool = True
    # Descriptors in use, against the open-file limit (server/admission.py, spare).
    files: OpenFiles = field(default_factory=OpenFiles)
    # Run handlers without a task when the state answers at once (the memory adapter).
    eager: bool = True
