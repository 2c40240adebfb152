"""Start-up and shutdown: build the node (apps, broker, hub, HTTP API), open the listening
socket, run the activity sweep, and close every connection on the way out."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import multiprocessing
import os
import random
import resource
import signal
import socket
import ssl
import tempfile
import time
from contextlib import suppress
from typing import Any

import msgspec
from prometheus_client import start_http_server

from clarion import logs, metrics
from clarion.apps import App, AppRegistry
from clarion.broker.base import Broker, ChannelState, RateLimiter
from clarion.broker.memory import MemoryBroker, MemoryRateLimiter, MemoryState
from clarion.broker.redis import (
    RedisBroker,
    RedisHeldMarks,
    RedisJobStore,
    RedisLink,
    RedisRateLimiter,
    RedisState,
)
from clarion.config import AppConfig, ConfigError, Settings, validate_apps
from clarion.hub.channels import Hub
from clarion.protocol.errors import CloseCode
from clarion.server.connection import Connection
from clarion.server.context import Context
from clarion.server.http_api import HttpApi
from clarion.stores import AppStore, open_store
from clarion.webhooks import Outbox

log = logging.getLogger("clarion.server")

# How often idle connections are checked for the server's ping and the pong timeout.
SWEEP_INTERVAL = 0.5
# A drain closes one batch of connections per step.
DRAIN_STEP = 0.1


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


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


async def _close_in_batches(
    connections: list[Connection], code: CloseCode, message: str, window: float
) -> None:
    """Send each connection ``pusher:error`` ``code`` and close it with that code, in
    batches spread over ``window`` seconds (all at once when it is 0).

    The one way many sockets are closed: a drain spreads the reconnects it causes, and a
    reload that switches an app off closes that app's sockets the same way.
    """
    if not connections:
        return
    steps = max(1, int(window / DRAIN_STEP)) if window > 0 else 1
    per_step = -(-len(connections) // steps)
    for start in range(0, len(connections), per_step):
        for conn in connections[start : start + per_step]:
            conn.close_with_error(code, message)
        if window > 0 and start + per_step < len(connections):
            await asyncio.sleep(window / steps)


class StartupError(Exception):
    """The server cannot start; the message says why."""


class Server:
    def __init__(self, settings: Settings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        registry = AppRegistry(settings.apps)
        cluster = settings.cluster
        self.link: RedisLink | None = None
        broker: Broker
        state: ChannelState
        limiter: RateLimiter
        if cluster.adapter == "redis":
            self.link = RedisLink(cluster.redis_url, cluster.prefix)
            broker = RedisBroker(self.link)
            state = self.redis_state = RedisState(self.link, cluster.node_lease)
            limiter = RedisRateLimiter(self.link)
        else:
            broker, state, limiter = MemoryBroker(), MemoryState(), MemoryRateLimiter()
        self.broker = broker

        def app_config(app_id: str) -> AppConfig | None:
            app = registry.by_id(app_id)
            return app.config if app is not None else None

        self.outbox = Outbox(
            app_config,
            settings.webhooks,
            store=RedisJobStore(self.link) if self.link is not None else None,
            marks=RedisHeldMarks(self.link) if self.link is not None else None,
        )
        hub = Hub(broker, state, app_config, self.outbox)
        # Unique among this process's sockets; the random prefix keeps nodes apart.
        node = random.randrange(1, 10**9)
        counter = itertools.count(random.randrange(1, 10**6))
        self.ctx: Context = Context(
            settings=settings.server,
            registry=registry,
            hub=hub,
            api=None,  # type: ignore[arg-type]
            new_socket_id=lambda: f"{node}.{next(counter)}",
            eager=self.link is None,
        )
        self.ctx.api = HttpApi(
            registry,
            hub,
            state,
            terminate_user=self._terminate_user,
            is_ready=self._ready,
            webhook_status=self.outbox.status,
            limiter=limiter,
        )
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self._tls: ssl.SSLContext | None = None
        self.store: AppStore | None = None
        self._store_task: asyncio.Task[None] | None = None

    def _ready(self) -> bool:
        """Ready for new connections: not draining, the cluster link up, and the process
        under its memory and file-descriptor thresholds."""
        if not (self.ctx.accepting and self.broker.ready()):
            return False
        server = self.settings.server
        if server.ready_max_rss_mb is not None and _rss_mb() > server.ready_max_rss_mb:
            return False
        return not (
            server.ready_max_open_files is not None and _open_files() > server.ready_max_open_files
        )

    def _terminate_user(self, app_id: str, user_id: str) -> None:
        self.ctx.hub.terminate_user(app_id, user_id)

    def _tls_context(self) -> ssl.SSLContext | None:
        server = self.settings.server
        if server.tls_cert is None or server.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load_certificates(context)
        return context

    def _load_certificates(self, context: ssl.SSLContext) -> None:
        server = self.settings.server
        assert server.tls_cert is not None and server.tls_key is not None
        if server.tls_ca is None:
            context.load_cert_chain(server.tls_cert, server.tls_key)
            return
        # The chain is the certificate followed by the CA bundle, in one PEM file.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as chain:
            for path in (server.tls_cert, server.tls_ca):
                with open(path, "rb") as part:
                    chain.write(part.read().rstrip(b"\n") + b"\n")
            chain.flush()
            context.load_cert_chain(chain.name, server.tls_key)

    def reload_tls(self) -> None:
        """SIGHUP: load the certificate and key again; new connections get them."""
        if self._tls is None:
            return
        try:
            self._load_certificates(self._tls)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
        else:
            log.info("TLS certificate reloaded")

    async def _load_apps(self) -> None:
        """Static apps plus the store's (a store app overrides a static one by id)."""
        assert self.store is not None
        merged = {app.id: app for app in self.settings.apps}
        keys = {app.key: app.id for app in self.settings.apps}
        for app in await self.store.load():
            owner = keys.get(app.key)
            if owner is not None and owner != app.id:
                log.error("apps store: app %s uses the key of app %s; ignored", app.id, owner)
                continue
            try:
                validate_apps([app])
            except ConfigError as exc:
                log.error("apps store: app %s is invalid (%s); ignored", app.id, exc)
                continue
            merged[app.id] = app
            keys[app.key] = app.id
        registry = self.ctx.registry
        # Apps are updated in place, so whether each was enabled is noted before.
        serving = [app for app in registry if app.enabled]
        for app_id in registry.replace(merged.values()):
            self.outbox.reconfigure(app_id)
        await self._close_stopped_apps(serving)

    async def _close_stopped_apps(self, serving: list[App]) -> None:
        """Close the open connections of the apps among ``serving`` that this reload
        disabled (4003) or removed (4001), with the error a new connection to them gets
        (spec §2): a switched-off app stops serving now, not when its clients reconnect.

        Both codes are "refused" for pusher-js (spec §18), so no reconnect wave follows
        and the sockets are closed at once; other apps' connections are not touched.
        """
        registry = self.ctx.registry
        # A connection holds its App object; a removed app's is no longer the registry's.
        removed = {app for app in serving if registry.by_id(app.id) is not app}
        disabled = {app for app in serving if app not in removed and not app.enabled}
        if not (removed or disabled):
            return
        open_conns = list(self.ctx.connections)
        for apps, code, message in (
            (removed, CloseCode.APP_NOT_FOUND, "Application does not exist"),
            (disabled, CloseCode.APP_DISABLED, "Application disabled"),
        ):
            closing = [conn for conn in open_conns if conn.app in apps]
            if closing:
                log.info(
                    "apps store: closing %d connection(s) with %d (%s)",
                    len(closing),
                    code,
                    message,
                )
                await _close_in_batches(closing, code, message, 0.0)

    async def _refresh_apps(self) -> None:
        interval = self.settings.apps_store.refresh_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self._load_apps()
            except Exception as exc:
                log.warning("apps store unavailable (%s): keeping the apps as they were", exc)

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        if self.settings.apps_store.url:
            self.store = open_store(self.settings.apps_store.url)
            try:
                await self._load_apps()
            except Exception as exc:
                raise StartupError(f"cannot read the apps store: {exc}") from None
            self._store_task = asyncio.create_task(self._refresh_apps())
        try:
            self._tls = self._tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot use the TLS certificate or key: {exc}") from None
        if self.link is not None:
            await self.link.connect()
            await self.broker.start()
            self.redis_state.on_reaped(self.ctx.hub.reaped)
            await self.redis_state.start()
            ctx = self.ctx
            ctx.connections_elsewhere = self.redis_state.share_connections(
                lambda: dict(ctx.connections_per_app)
            )
            await self.outbox.start([app.id for app in self.ctx.registry])
        server = self.settings.server
        self._server = await loop.create_server(
            lambda: Connection(self.ctx),
            server.host,
            server.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            ssl=self._tls,
        )
        self._sweeper = asyncio.create_task(self._sweep())
        self._start_metrics()
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    def _start_metrics(self) -> None:
        config = self.settings.metrics
        if not config.enabled:
            return
        ctx = self.ctx

        def sizes() -> dict[str, dict[str, int]]:
            return {
                "connections": dict(ctx.connections_per_app),
                "webhook_queue": self.outbox.queue_sizes(),
                **ctx.hub.sizes(),
            }

        metrics.watch_state(sizes)
        try:
            self._metrics_server, _ = start_http_server(config.port, config.host)
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%s (%s); metrics are off",
                config.host,
                config.port,
                exc,
            )
            return
        host, port = self._metrics_server.server_address[:2]
        print(f"Clarion metrics on http://{host}:{port}/metrics", flush=True)

    async def _sweep(self) -> None:
        pong_timeout = self.settings.server.pong_timeout
        rounds = 0
        while True:
            before = time.monotonic()
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            # A busy or blocked loop runs the timer late: that delay is the loop's lag.
            metrics.loop_lag.set(max(0.0, now - before - SWEEP_INTERVAL))
            rounds += 1
            try:
                for conn in list(self.ctx.connections):
                    conn.check_activity(now, pong_timeout)
                for http in list(self.ctx.http_connections):
                    http.check_http(now)
                await self.ctx.hub.flush_subscription_counts(now)
                if rounds % 60 == 0:
                    await self.ctx.hub.state.housekeeping()
            except Exception:
                # The sweep pings and times out every socket: it must never stop.
                log.exception("sweep failed; it goes on")

    async def stop(self, window: float = 0.0) -> None:
        """Stop: refuse new connections and report not ready, close the open ones with
        4200 (pusher-js reconnects at once, to another node behind a load balancer) in
        batches spread over ``window`` seconds, deliver pending webhooks, leave the cluster.
        """
        self.ctx.accepting = False
        if self._server is not None:
            self._server.close()
        connections = list(self.ctx.connections)
        if connections:
            log.info("draining %d connection(s) over %.1f s", len(connections), window)
            await _close_in_batches(
                connections, CloseCode.RECONNECT, "Server is restarting; reconnect", window
            )
        for task in (self._sweeper, self._store_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task], timeout=2.0)
        if self.store is not None:
            await self.store.close()
        if self.ctx.connections:
            deadline = time.monotonic() + 2.0
            while self.ctx.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if self.ctx.leaving:
            await asyncio.wait(list(self.ctx.leaving), timeout=5.0)
        if self.link is not None:
            # Whatever share of the cluster state is left goes now, with its events.
            await self.redis_state.stop()
        # Connections are gone, so their vacated/removed webhooks are in the outbox now
        # (a durable outbox still needs the Redis link: it closes after).
        await self.outbox.close()
        if self.link is not None:
            self.link.closing()
            await self.broker.stop()
            await self.link.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


def _announce(host: str, port: int, settings: Settings) -> None:
    tls = settings.server.tls_cert is not None
    http, ws = ("https", "wss") if tls else ("http", "ws")
    print(
        f"Clarion listening on {http}://{host}:{port} (WebSocket {ws}://{host}:{port}/app/{{key}})",
        flush=True,
    )
    for app in settings.apps:
        print(f"  app id={app.id} key={app.key}", flush=True)


async def serve(settings: Settings, announce: bool = True, reuse_port: bool = False) -> None:
    check_open_files_limit(settings)
    server = Server(settings, reuse_port=reuse_port)
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
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    host, port = await server.start()
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
        _announce(host, port, settings)
    await stop.wait()
    log.info("shutting down")
    await server.stop(window[0])
    if pid_file:
        with suppress(OSError):
            os.unlink(pid_file)


def run(settings: Settings, announce: bool = True, reuse_port: bool = False) -> None:
    main = serve(settings, announce=announce, reuse_port=reuse_port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main)
    else:
        uvloop.run(main)


def _worker(settings: Settings) -> None:
    logs.setup(settings.server.log_level, worker=True)
    run(settings, announce=False, reuse_port=True)


def run_workers(settings: Settings, workers: int) -> None:
    """N processes share the port (SO_REUSEPORT) and form one cluster through Redis.

    The parent only supervises: a worker that dies is started again, and the cluster
    cleans up after the dead one as after any dead node (its lease runs out).
    """
    server = settings.server
    # Hold the port (SO_REUSEPORT, not listening) so that port 0 resolves once for all.
    holder = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((server.host, server.port))
    port = holder.getsockname()[1]
    settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(server, port=port))
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []

    def start_worker(index: int) -> multiprocessing.process.BaseProcess:
        worker_settings = settings
        if settings.metrics.port:
            metrics_config = msgspec.structs.replace(
                settings.metrics, port=settings.metrics.port + index
            )
            worker_settings = msgspec.structs.replace(settings, metrics=metrics_config)
        child = context.Process(target=_worker, args=(worker_settings,), daemon=False)
        child.start()
        return child

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.extend(start_worker(index) for index in range(workers))
    _wait_until_up(server.host, port)
    print(f"Clarion: {workers} workers sharing the port", flush=True)
    _announce(server.host, port, settings)
    while True:
        for index, child in enumerate(children):
            child.join(timeout=0.2)
            if child.is_alive() or stopping:
                continue
            log.error("worker %s exited with %s; starting a new one", child.pid, child.exitcode)
            children[index] = start_worker(index)
        if stopping:
            for child in children:
                child.join(timeout=15)
                if child.is_alive():
                    child.kill()
            holder.close()
            return


def _wait_until_up(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as probe:
                probe.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
