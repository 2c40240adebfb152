"""Clarion inside another program: :class:`Server`, a node started and stopped by its host.

The settings are the TOML file's, as keyword arguments: the keys of ``[server]`` directly
(``port=0``, ``host=...``), the other tables as ``apps=``, ``cluster=``, ``webhooks=``,
``metrics=`` and ``apps_store=``. They are checked by the loader's own rules
(:func:`clarion.config.from_mapping`), and the node is :class:`clarion.server.node.Node`,
the same composition root ``clarion serve`` runs. What an embedded server leaves to its
host: the event loop, signals, the pid file and logging setup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from clarion.config import Settings, from_mapping
from clarion.server.node import Node


class Server:
    """One Clarion node in the running event loop.

    ``async with Server(port=0, apps=[{"id": "1", "key": "k", "secret": "s"}]) as server:``
    starts it (``server.host``/``server.port`` say where it listens) and stops it on exit;
    :meth:`start` and :meth:`stop` do the same by hand, as often as wanted.
    """

    def __init__(
        self,
        *,
        apps: Sequence[Mapping[str, Any]] | None = None,
        cluster: Mapping[str, Any] | None = None,
        webhooks: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        apps_store: Mapping[str, Any] | None = None,
        **server: Any,
    ) -> None:
        raw: dict[str, Any] = {
            "server": dict(server),
            "apps": [dict(app) for app in apps or ()],
            "cluster": dict(cluster or {}),
            "webhooks": dict(webhooks or {}),
            # A host process has its own metrics (and may embed several servers): the
            # Prometheus endpoint is off unless asked for.
            "metrics": dict(metrics) if metrics is not None else {"enabled": False},
            "apps_store": dict(apps_store or {}),
        }
        if not raw["apps"] and not raw["apps_store"].get("url"):
            raise TypeError("clarion.Server needs apps=[{'id': ..., 'key': ..., 'secret': ...}]")
        self.settings: Settings = from_mapping(raw)
        self.node: Node | None = None
        self.host: str = self.settings.server.host
        self.port: int = self.settings.server.port

    @property
    def running(self) -> bool:
        return self.node is not None

    @property
    def http_url(self) -> str:
        """The HTTP API's base URL (where the server listens, once started)."""
        scheme = "https" if self.settings.server.tls_cert else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket base URL; clients connect to ``{ws_url}/app/{key}``."""
        scheme = "wss" if self.settings.server.tls_cert else "ws"
        return f"{scheme}://{_url_host(self.host)}:{self.port}{self.settings.server.path_prefix}"

    async def start(self) -> Server:
        """Listen (a fresh node each time); raises StartupError or OSError if it cannot."""
        if self.node is not None:
            raise RuntimeError("this clarion.Server is already running")
        node = Node(self.settings)
        try:
            self.host, self.port = await node.start()
        except BaseException:
            # Whatever started before the failure (cluster link, outbox) is stopped.
            with contextlib.suppress(Exception):
                await node.stop()
            raise
        self.node = node
        return self

    async def stop(self, drain_window: float = 0.0) -> None:
        """Close the connections (4200, spread over ``drain_window`` seconds), deliver
        pending webhooks and stop listening. Does nothing when not running."""
        node, self.node = self.node, None
        if node is not None:
            await node.stop(drain_window)

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _url_host(host: str) -> str:
    # A wildcard address is not one to connect to; an IPv6 address needs brackets.
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
