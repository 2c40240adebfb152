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
    # The open-file limit (server/admission.py, spare): the first descriptor of the
    # reserve (0: not read yet), and the lowest free descriptor as last read plus the
    # sockets opened since (an estimate that only rises between readings).
    reserved_from: int = 0
    next_file: int = 0
    # Run handlers without a task when the state answers at once (the memory adapter).
    eager: bool = True
