"""Who may connect: the per-address and per-app connection counts, and accept or refuse.

Every socket counts against its address from ``connection_made`` on, upgraded or not, so
that idle or half-sent requests cannot take all the descriptors either. The address is
the client's (:mod:`clarion.protocol.proxy`): the socket's peer at first, then, when a
PROXY protocol header or a trusted proxy's forwarding header names the client, that
address (:func:`readdress` moves the count, so every socket is counted exactly once).
A WebSocket upgrade is admitted when the connect URL passes
:mod:`clarion.protocol.handshake` and then, in this order: the upgrade's Origin is
allowed by the app, the app is under its ``max_connections`` (counting the other nodes
of a cluster), the server is still accepting, and the address is under
``max_connections_per_ip``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from clarion import metrics
from clarion.apps import App
from clarion.protocol import handshake
from clarion.protocol.errors import CloseCode, ConnectRefused
from clarion.server.context import Context

if TYPE_CHECKING:
    from clarion.server.connection import Connection


def socket_opened(ctx: Context, transport: asyncio.BaseTransport) -> str:
    """Count a new socket against its address; return the address."""
    peer = transport.get_extra_info("peername")
    address = str(peer[0]) if peer else ""
    per_ip = ctx.connections_per_ip
    per_ip[address] = per_ip.get(address, 0) + 1
    return address


def socket_closed(ctx: Context, address: str) -> None:
    per_ip = ctx.connections_per_ip
    left = per_ip.get(address, 1) - 1
    if left > 0:
        per_ip[address] = left
    else:
        per_ip.pop(address, None)


def readdress(ctx: Context, old: str, new: str) -> str:
    """Move a socket's count from address ``old`` to ``new``; return ``new``."""
    if new != old:
        socket_closed(ctx, old)
        per_ip = ctx.connections_per_ip
        per_ip[new] = per_ip.get(new, 0) + 1
    return new


def over_address_limit(ctx: Context, address: str) -> bool:
    """More sockets from ``address`` than allowed (this one is counted already)."""
    per_ip = ctx.settings.max_connections_per_ip
    return bool(per_ip) and ctx.connections_per_ip.get(address, 0) > per_ip


def admit(ctx: Context, path: str, query: str, address: str, origin: str | None = None) -> App:
    """The app a WebSocket upgrade connects to; raise :class:`ConnectRefused` if refused."""
    app = handshake.connect_app(path, query, ctx.settings.path_prefix, ctx.registry.by_key)
    handshake.check_origin(origin, app.config.allowed_origins)
    limit = app.config.max_connections
    if limit is not None and (
        ctx.connections_per_app.get(app.id, 0) + ctx.connections_elsewhere.get(app.id, 0) >= limit
    ):
        raise ConnectRefused(
            CloseCode.OVER_CONNECTION_QUOTA, "Application is over connection quota"
        )
    if not ctx.accepting:
        raise ConnectRefused(CloseCode.RECONNECT, "Server is shutting down; reconnect")
    if over_address_limit(ctx, address):
        # 41xx: pusher-js waits a second before trying again, so a reconnect loop cannot
        # spin; the cap itself keeps descriptors for everyone else.
        raise ConnectRefused(
            CloseCode.OVER_CAPACITY, "Over capacity: too many connections from your address"
        )
    return app


def refused(refusal: ConnectRefused) -> None:
    metrics.connections_refused.labels(str(int(refusal.code))).inc()


def opened(ctx: Context, conn: Connection, app: App) -> None:
    """An admitted connection is open: count it for its app."""
    ctx.connections.add(conn)
    ctx.connections_per_app[app.id] = ctx.connections_per_app.get(app.id, 0) + 1
    app.opened.inc()


def closed(ctx: Context, conn: Connection, app: App) -> None:
    ctx.connections.discard(conn)
    ctx.connections_per_app[app.id] -= 1
