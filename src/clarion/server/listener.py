"""Start-up and shutdown: build the node (apps, broker, hub, HTTP API), open the listening
socket, run the activity sweep, and close every connection on the way out."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import random
import signal
import socket
import time
from typing import Any

import msgspec
from prometheus_client import start_http_server

from clarion import metrics
from clarion.apps import AppRegistry
from clarion.broker.base import Broker, ChannelState, RateLimiter
from clarion.broker.memory import MemoryBroker, MemoryRateLimiter, MemoryState
from clarion.broker.redis import (
    RedisBroker,
    RedisJobStore,
    RedisLink,
    RedisRateLimiter,
    RedisState,
)
from clarion.config import AppConfig, Settings
from clarion.hub.channels import Hub
from clarion.protocol.errors import CloseCode
from clarion.server.connection import Connection, Context
from clarion.server.http_api import HttpApi
from clarion.webhooks import Outbox

log = logging.getLogger("clarion.server")

# How often idle connections are checked for the server's ping and the pong timeout.
SWEEP_INTERVAL = 0.5


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

    def _ready(self) -> bool:
        return self.ctx.accepting and self.broker.ready()

    def _terminate_user(self, app_id: str, user_id: str) -> None:
        self.ctx.hub.terminate_user(app_id, user_id)

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        if self.link is not None:
            await self.link.connect()
            await self.broker.start()
            self.redis_state.on_reaped(self.ctx.hub.reaped)
            await self.redis_state.start()
            await self.outbox.start([app.id for app in self.ctx.registry])
        server = self.settings.server
        self._server = await loop.create_server(
            lambda: Connection(self.ctx),
            server.host,
            server.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
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
        while True:
            before = time.monotonic()
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            # A busy or blocked loop runs the timer late: that delay is the loop's lag.
            metrics.loop_lag.set(max(0.0, now - before - SWEEP_INTERVAL))
            for conn in list(self.ctx.connections):
                conn.check_activity(now, pong_timeout)
            await self.ctx.hub.flush_subscription_counts(now)

    async def stop(self) -> None:
        self.ctx.accepting = False
        if self._server is not None:
            self._server.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper], timeout=2.0)
        for conn in list(self.ctx.connections):
            conn.close_with_error(CloseCode.RECONNECT, "Server is shutting down; reconnect")
        if self.ctx.connections:
            deadline = time.monotonic() + 2.0
            while self.ctx.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        # Connections are gone, so their vacated/removed webhooks are in the outbox now.
        await self.outbox.close()
        if self.link is not None:
            await self.redis_state.stop()
            self.link.closing()
            await self.broker.stop()
            await self.link.close()


def _announce(host: str, port: int, settings: Settings) -> None:
    print(
        f"Clarion listening on http://{host}:{port} (WebSocket ws://{host}:{port}/app/{{key}})",
        flush=True,
    )
    for app in settings.apps:
        print(f"  app id={app.id} key={app.key}", flush=True)


async def serve(settings: Settings, announce: bool = True, reuse_port: bool = False) -> None:
    server = Server(settings, reuse_port=reuse_port)
    host, port = await server.start()
    if announce:
        _announce(host, port, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()


def run(settings: Settings, announce: bool = True, reuse_port: bool = False) -> None:
    main = serve(settings, announce=announce, reuse_port=reuse_port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main)
    else:
        uvloop.run(main)


def _worker(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s",
    )
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
