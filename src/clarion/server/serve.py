"""Run one node in this process: the event loop (uvloop), the open-file limit, signals
(SIGTERM drains, SIGINT stops at once, SIGHUP reloads the certificate), collector
tuning, the pid file and the line that says where the server listens."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
from contextlib import suppress

from clarion.admin.server import AdminServer
from clarion.config import Settings
from clarion.server.node import Node, StartupError

log = logging.getLogger("clarion.server")


def check_open_files_limit(settings: Settings) -> None:
    """Raise the soft limit on open files to the hard one, and warn when it stays below
    what the configured connection limits need (each connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    limits = [app.max_connections for app in settings.apps if app.max_connections is not None]
    wanted = sum(limits) if len(limits) == len(settings.apps) else 10_000
    if soft < wanted + 100:
        log.warning(
            "open-file limit is %d but the configured connections need about %d: raise it "
            "(e.g. `ulimit -n %d`, or LimitNOFILE=%d in the systemd unit)",
            soft,
            wanted + 100,
            wanted + 1024,
            wanted + 1024,
        )


def print_listening(host: str, port: int, settings: Settings) -> None:
    """Print where the server listens and the apps it serves."""
    tls = settings.server.tls_cert is not None
    http, ws = ("https", "wss") if tls else ("http", "ws")
    print(
        f"Clarion listening on {http}://{host}:{port} (WebSocket {ws}://{host}:{port}/app/{{key}})",
        flush=True,
    )
    for app in settings.apps:
        print(f"  app id={app.id} key={app.key}", flush=True)


async def start_admin(node: Node, optional: bool) -> AdminServer | None:
    """Open the admin console when ``[admin] token`` is set; return it. ``optional``
    (the embedded default's console) turns a port in use into a warning."""
    admin = node.settings.admin
    if admin.token is None:
        return None
    server = AdminServer(node, admin.token)
    try:
        host, port = await server.start(admin.host, admin.port)
    except OSError as exc:
        if not optional:
            where = f"{admin.host}:{admin.port}"
            raise StartupError(f"cannot open the admin console on {where}: {exc}") from None
        log.warning("admin console not started: %s:%d: %s", admin.host, admin.port, exc)
        return None
    shown = f"[{host}]" if ":" in host else host
    if optional:
        # The embedded default's token was made just now: the URL is the only way to it.
        print(f"Admin console: http://{shown}:{port}/admin/?token={admin.token}", flush=True)
    else:
        # A configured token stays out of the output (logs are often kept and shared).
        print(
            f"Admin console: http://{shown}:{port}/admin/ (sign in with the admin token)",
            flush=True,
        )
    return server


async def serve(
    settings: Settings,
    announce: bool = True,
    reuse_port: bool = False,
    admin: bool = True,
    admin_optional: bool = False,
) -> None:
    """Start a node, wait for SIGTERM or SIGINT, and stop it."""
    check_open_files_limit(settings)
    node = Node(settings, reuse_port=reuse_port)
    window: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(drain: float) -> None:
        window.append(drain)
        stop.set()

    # Installed before anything is announced, so that a signal right after start is a
    # shutdown, not a kill. SIGTERM (a deploy, `clarion drain`) drains gently; SIGINT
    # (Ctrl-C) exits at once; SIGHUP reloads the TLS certificate.
    loop.add_signal_handler(signal.SIGTERM, on_signal, settings.server.drain_window)
    loop.add_signal_handler(signal.SIGINT, on_signal, 0.0)
    loop.add_signal_handler(signal.SIGHUP, node.certificates.reload)
    host, port = await node.start()
    # The objects built at start live as long as the process: keep the cycle collector
    # off them, and let it run less often (measured: ~5 % less CPU per connect+subscribe;
    # the data plane makes few reference cycles).
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)
    pid_file = settings.server.pid_file
    if pid_file:
        with open(pid_file, "w") as out:
            out.write(f"{os.getpid()}\n")
    if announce:
        print_listening(host, port, settings)
    console = await start_admin(node, admin_optional) if admin else None
    await stop.wait()
    log.info("shutting down")
    if console is not None:
        await console.stop()
    await node.stop(window[0])
    if pid_file:
        with suppress(OSError):
            os.unlink(pid_file)


def run(settings: Settings, **options: bool) -> None:
    """Run one node in this process until it is told to stop (``options``: serve's)."""
    main = serve(settings, **options)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main)
    else:
        uvloop.run(main)
