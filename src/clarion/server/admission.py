"""Who may connect: the per-address and per-app connection counts, and accept or refuse.

Every socket counts against its address from ``connection_made`` on, upgraded or not, so
that idle or half-sent requests cannot take all the descriptors either; so does every
request head in progress across reads (``max_unfinished_heads_per_ip``). The address is
the client's (:mod:`clarion.protocol.proxy`): the socket's peer at first, then, when a
PROXY protocol header or a trusted proxy's forwarding header names the client, that
address (:func:`readdress` moves the count, so every socket is counted exactly once).
A WebSocket upgrade is admitted when the connect URL passes
:mod:`clarion.protocol.handshake` and then, in this order: the upgrade's Origin is
allowed by the app, the app is under its ``max_connections`` (counting the other nodes
of a cluster), the server is still accepting and has descriptors to spare, and the
address is under ``max_connections_per_ip``.

At the open-file limit the event loop (uvloop: libuv) accepts and at once closes every
new connection, and tells nobody, so the server must not get there: the last
``[server] reserved_files`` descriptors are a reserve. A socket accepted into it
(:func:`spare`) is counted and logged, answered one HTTP request (``/up`` keeps
answering) but never upgraded, and makes room by closing the oldest socket that is
still speaking HTTP and not waiting for an answer: a slowloris goes before anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from typing import TYPE_CHECKING

from clarion import metrics
from clarion.apps import App
from clarion.protocol import handshake
from clarion.protocol.errors import CloseCode, ConnectRefused
from clarion.server.context import Context

if TYPE_CHECKING:
    from clarion.server.connection import Connection

log = logging.getLogger("clarion.server")

# Seconds between two log lines about the open-file limit.
FILE_LIMIT_LOG_INTERVAL = 10.0
# Seconds between two readings of the process's descriptors near the limit.
FILES_RECOUNT = 1.0
_file_limit_logged = [-FILE_LIMIT_LOG_INTERVAL]


def socket_opened(ctx: Context, transport: asyncio.BaseTransport) -> str:
    """Count a new socket against its address; return the address."""
    peer = transport.get_extra_info("peername")
    address = str(peer[0]) if peer else ""
    per_ip = ctx.connections_per_ip
    per_ip[address] = per_ip.get(address, 0) + 1
    ctx.files.sockets += 1
    return address


def _uncount(counts: dict[str, int], address: str) -> None:
    """One less for ``address`` (no entry once none is left: addresses come and go)."""
    left = counts.get(address, 1) - 1
    if left > 0:
        counts[address] = left
    else:
        counts.pop(address, None)


def socket_closed(ctx: Context, address: str) -> None:
    ctx.files.sockets -= 1
    _uncount(ctx.connections_per_ip, address)


def head_opened(ctx: Context, address: str) -> bool:
    """A request head from ``address`` goes on across reads: count it, or return False
    when the address has ``max_unfinished_heads_per_ip`` of them already."""
    heads = ctx.unfinished_heads
    count = heads.get(address, 0)
    cap = ctx.settings.max_unfinished_heads_per_ip
    if cap and count >= cap:
        metrics.sockets_dropped.labels("unfinished_heads").inc()
        return False
    heads[address] = count + 1
    return True


def head_closed(ctx: Context, address: str) -> None:
    """A head counted by :func:`head_opened` is complete (or its socket is gone)."""
    _uncount(ctx.unfinished_heads, address)


def _open_files() -> int:
    """Descriptors this process has open (0 where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing them
    except OSError:
        return 0


def spare(ctx: Context) -> bool:
    """Whether a new socket took one of the reserved descriptors; if so, count and log it
    and close the oldest idle HTTP socket to make room.

    The sockets are counted as they open and close; the other descriptors are read from
    the process (which costs a walk of its descriptor table) with the first socket, and
    again when the count comes near the reserve, at most every FILES_RECOUNT seconds.
    """
    files = ctx.files
    if files.sockets + files.others <= files.reserved_from:
        return False
    # The first socket (the limit is not read yet), or one near the reserve.
    now = time.monotonic()
    if not files.reserved_from:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 62
        files.reserved_from = soft - min(ctx.settings.reserved_files, soft // 4)
    if now - files.counted_at >= FILES_RECOUNT:
        files.counted_at = now
        files.others = max(0, _open_files() - files.sockets)
    if files.sockets + files.others <= files.reserved_from:
        return False
    metrics.file_limit_sockets.inc()
    if now - _file_limit_logged[0] >= FILE_LIMIT_LOG_INTERVAL:
        _file_limit_logged[0] = now
        log.warning(
            "open-file limit nearly reached (%d of %d descriptors in use): refusing "
            "WebSocket connections and closing idle HTTP sockets until some are free",
            files.sockets + files.others,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
    for conn in ctx.http_connections:
        if not conn.waiting_for_answer():
            metrics.sockets_dropped.labels("file_limit").inc()
            conn.evict()
            break
    return True


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


def admit(
    ctx: Context,
    path: str,
    query: str,
    address: str,
    origin: str | None = None,
    spare: bool = False,
) -> App:
    """The app a WebSocket upgrade connects to; raise :class:`ConnectRefused` if refused
    (``spare``: the socket is in the reserved descriptors)."""
    app = handshake.connect_app(path, query, ctx.settings.path_prefix, ctx.registry.by_key)
    config = app.config
    patterns = config.allowed_origins
    # Unchecked when there is none (never refused by it) or any is allowed (the default).
    if origin is not None and not (patterns and patterns[0] == "*"):
        handshake.check_origin(origin, patterns)
    limit = config.max_connections
    if limit is not None and (
        ctx.connections_per_app.get(app.id, 0) + ctx.connections_elsewhere.get(app.id, 0) >= limit
    ):
        raise ConnectRefused(
            CloseCode.OVER_CONNECTION_QUOTA, "Application is over connection quota"
        )
    if not ctx.accepting:
        raise ConnectRefused(CloseCode.RECONNECT, "Server is shutting down; reconnect")
    if spare:
        # 41xx: pusher-js waits a second before it tries again.
        raise ConnectRefused(CloseCode.OVER_CAPACITY, "Over capacity: the server is full")
    if ctx.settings.max_connections_per_ip and over_address_limit(ctx, address):
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
    app.opened.value += 1  # (a PlainCount: its addition, without the call)


def closed(ctx: Context, conn: Connection, app: App) -> None:
    ctx.connections.discard(conn)
    ctx.connections_per_app[app.id] -= 1
