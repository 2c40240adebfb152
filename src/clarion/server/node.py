"""The composition root: one place that builds a node, and the node's life.

:class:`Node` wires the app registry (and the app store, if any), the cluster backend
(broker, channel state and rate limiter, in memory or through Redis), the hub, the
webhook outbox, the HTTP API and the connections' shared :class:`Context`, each built
complete before the next needs it. Starting it opens the listening socket, the sweep
(pings, timeouts, counts) and the metrics endpoint; stopping it drains the connections
and leaves the cluster. Process concerns (event loop, signals, pid file) are
:mod:`clarion.server.serve`'s; certificates are :mod:`clarion.server.tls`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server

from clarion import metrics
from clarion.apps import App, AppRegistry
from clarion.cluster.interfaces import (
    Broker,
    ChannelState,
    HeldMarks,
    JobStore,
    RateLimiter,
    node_name,
)
from clarion.cluster.memory import MemoryBroker, MemoryRateLimiter, MemoryState
from clarion.cluster.redis import (
    RedisBroker,
    RedisHeldMarks,
    RedisJobStore,
    RedisLink,
    RedisRateLimiter,
    RedisState,
)
from clarion.cluster.redis.sentinel import SentinelEndpoint
from clarion.cluster.redis.sharded import ShardedBroker, ShardedHeldMarks, ShardedMembership
from clarion.config import AppConfig, ClusterSettings, ConfigError, Settings, validate_apps
from clarion.hub.channels import Hub
from clarion.protocol.errors import CloseCode
from clarion.server.connection import Connection
from clarion.server.context import Context
from clarion.server.http_api import HttpApi
from clarion.server.tls import Certificates
from clarion.stores import AppStore, StoreError, open_store
from clarion.webhooks import Outbox

log = logging.getLogger("clarion.server")

# How often idle connections are checked for the server's ping and the pong timeout.
SWEEP_INTERVAL = 0.5
# A drain closes one batch of connections per step.
DRAIN_STEP = 0.1
# While the apps store stays unusable, the error is logged again at most this often.
STORE_ERROR_LOG_INTERVAL = 60.0


class StartupError(Exception):
    """The server cannot start; the message says why."""


class StoreEmptied(Exception):
    """The apps store answered with no app after it had some: taken for a store that was
    replaced or wiped (an empty database at the same address), not for an operator who
    removed every app, so the apps last loaded are kept."""


class Backend:
    """The cluster adapter's parts. In memory: this process's own tables, nothing to
    connect to, and every handler completes without suspending."""

    # Whether handlers may run without a task (see clarion.server.eager).
    eager = True

    def __init__(
        self,
        broker: Broker,
        state: ChannelState,
        limiter: RateLimiter,
        jobs: JobStore | None = None,
        marks: HeldMarks | None = None,
    ) -> None:
        self.broker = broker
        self.state = state
        self.limiter = limiter
        # A webhook outbox shared with the other nodes (None: this node's own).
        self.jobs = jobs
        self.marks = marks

    async def open(self) -> None:
        """Connect what the parts share, then start the broker."""
        await self.broker.start()

    async def close(self) -> None:
        """Stop the broker, then close what the parts share."""
        await self.broker.stop()


class RedisBackend(Backend):
    """Every part through one Redis link; the webhook outbox is shared too."""

    # redis-py waits with asyncio.timeout, which needs a current task.
    eager = False

    def __init__(self, cluster: ClusterSettings) -> None:
        sharded = cluster.adapter == "redis-cluster"
        endpoint = None
        if cluster.sentinels:
            endpoint = SentinelEndpoint(
                cluster.redis_url, cluster.sentinels, cluster.sentinel_master
            )
        self.link = link = RedisLink(
            cluster.redis_url,
            cluster.prefix,
            cluster.publish_timeout,
            endpoint,
            cluster=sharded,
        )
        if sharded:  # Redis Cluster: the parts that differ (cluster/redis/sharded.py)
            super().__init__(
                ShardedBroker(link),
                RedisState(link, cluster.node_lease, ShardedMembership),
                RedisRateLimiter(link),
                jobs=RedisJobStore(link),
                marks=ShardedHeldMarks(link),
            )
            return
        super().__init__(
            RedisBroker(link),
            RedisState(link, cluster.node_lease),
            RedisRateLimiter(link),
            jobs=RedisJobStore(link),
            marks=RedisHeldMarks(link),
        )

    async def open(self) -> None:
        await self.link.connect()
        await super().open()

    async def close(self) -> None:
        self.link.closing()
        await super().close()
        await self.link.close()


def open_backend(cluster: ClusterSettings) -> Backend:
    """The backend ``[cluster] adapter`` names (not connected yet)."""
    if cluster.adapter in ("redis", "redis-cluster"):
        return RedisBackend(cluster)
    return Backend(MemoryBroker(), MemoryState(), MemoryRateLimiter())


def socket_ids() -> Callable[[], str]:
    """A source of socket ids unique among this process's sockets; the random prefix
    keeps nodes apart."""
    node = random.randrange(1, 10**9)
    counter = itertools.count(random.randrange(1, 10**6))
    # "{node}.{n}" for n = the next count, made in C (one per connection, no Python call).
    return map(f"{node}.".__add__, map(str, counter)).__next__


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def close_in_batches(
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


class Node:
    """One Clarion node, fully built by the constructor; nothing runs until start()."""

    def __init__(self, settings: Settings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.registry = registry = AppRegistry(settings.apps)
        self.backend = backend = open_backend(settings.cluster)
        self.outbox = Outbox(
            self._app_config, settings.webhooks, store=backend.jobs, marks=backend.marks
        )
        self.hub = hub = Hub(backend.broker, backend.state, self._app_config, self.outbox)
        self.outbox.deliveries.taps = taps = hub.taps
        # The admin console's rows name their node, and reach consoles on other nodes.
        taps.node = node_name()
        backend.broker.bind_rows(taps.receive, taps.watched_elsewhere)
        taps.relay = backend.broker.publish_row
        self.api = HttpApi(
            registry,
            hub,
            backend.state,
            terminate_user=hub.terminate_user,
            is_ready=self.ready,
            ready_notes=self.ready_notes,
            webhook_status=self.outbox.status,
            limiter=backend.limiter,
        )
        self.ctx = Context(
            settings=settings.server,
            registry=registry,
            hub=hub,
            api=self.api,
            new_socket_id=socket_ids(),
            eager=backend.eager,
        )
        self.certificates = Certificates(settings.server)
        self.store: AppStore | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._store_task: asyncio.Task[None] | None = None
        # How many apps the store last answered with (None: never read).
        self._store_apps: int | None = None
        # Why the store cannot be used, and since when (monotonic); None while it can.
        self.store_problem: tuple[str, float] | None = None
        self._store_logged_at = 0.0
        self._metrics_server: Any = None

    def _app_config(self, app_id: str) -> AppConfig | None:
        app = self.registry.by_id(app_id)
        return app.config if app is not None else None

    def ready(self) -> bool:
        """Ready for new connections: not draining, the cluster link up, and the process
        under its memory and file-descriptor thresholds."""
        if not (self.ctx.accepting and self.backend.broker.ready()):
            return False
        server = self.settings.server
        if server.ready_max_rss_mb is not None and _rss_mb() > server.ready_max_rss_mb:
            return False
        return not (
            server.ready_max_open_files is not None and _open_files() > server.ready_max_open_files
        )

    def ready_notes(self) -> dict[str, object]:
        """What ``/ready`` adds to its answer: a node that serves the apps it last loaded
        because its store cannot be used says so (it stays ready: its clients and the API
        work, and every node of a deployment shares the store, so sending traffic
        elsewhere would not help)."""
        if self.store_problem is None:
            return {}
        reason, since = self.store_problem
        return {
            "apps_store": {
                "stale": reason,
                "since_seconds": round(time.monotonic() - since, 1),
            }
        }

    # --- start and stop ---------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Load the apps store and the certificate, join the cluster, listen; return the
        address listened on. Raises StartupError (or OSError for the port)."""
        loop = asyncio.get_running_loop()
        if self.settings.apps_store.url:
            try:
                self.store = open_store(self.settings.apps_store.url)
            except StoreError as exc:  # a driver not installed (an extra), a bad URL
                raise StartupError(str(exc)) from None
            try:
                await self.load_apps()
            except Exception as exc:
                raise StartupError(f"cannot read the apps store: {exc}") from None
            self._store_task = asyncio.create_task(self._refresh_apps())
        try:
            tls = self.certificates.load()
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot use the TLS certificate or key: {exc}") from None
        await self._join_cluster()
        server = self.settings.server
        self._server = await loop.create_server(
            lambda: Connection(self.ctx),
            server.host,
            server.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            ssl=tls,
        )
        self._sweeper = asyncio.create_task(self._sweep())
        self._start_metrics()
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _join_cluster(self) -> None:
        ctx, state = self.ctx, self.backend.state
        await self.backend.open()
        state.on_reaped(self.hub.reaped)
        await state.start()
        ctx.connections_elsewhere = state.share_connections(lambda: dict(ctx.connections_per_app))
        await self.outbox.start([app.id for app in self.registry])

    async def stop(self, window: float = 0.0) -> None:
        """Stop: refuse new connections and report not ready, close the open ones with
        4200 (pusher-js reconnects at once, to another node behind a load balancer) in
        batches spread over ``window`` seconds, deliver pending webhooks, leave the cluster.
        """
        ctx = self.ctx
        ctx.accepting = False
        if self._server is not None:
            self._server.close()
        connections = list(ctx.connections)
        if connections:
            log.info("draining %d connection(s) over %.1f s", len(connections), window)
            await close_in_batches(
                connections, CloseCode.RECONNECT, "Server is restarting; reconnect", window
            )
        for task in (self._sweeper, self._store_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task], timeout=2.0)
        if self.store is not None:
            await self.store.close()
        if ctx.connections:
            deadline = time.monotonic() + 2.0
            while ctx.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if ctx.leaving:
            await asyncio.wait(list(ctx.leaving), timeout=5.0)
        await ctx.hub.settle()  # leaves a fan-out scheduled for sockets it found gone
        try:
            # Whatever share of the cluster state is left goes now, with its events.
            await self.backend.state.stop()
        except Exception:
            log.exception("leaving the cluster failed; flushing webhooks all the same")
        # Connections are gone, so their vacated/removed webhooks are in the outbox now
        # (a durable outbox still needs the Redis link: it closes after).
        try:
            await self.outbox.close()
        finally:
            await self.backend.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

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
        ctx = self.ctx
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
                for conn in list(ctx.connections):
                    conn.check_activity(now, pong_timeout)
                for http in list(ctx.http_connections):
                    http.check_http(now)
                await ctx.hub.flush_subscription_counts(now)
                if rounds % 60 == 0:
                    await ctx.hub.state.housekeeping()
            except Exception:
                # The sweep pings and times out every socket: it must never stop.
                log.exception("sweep failed; it goes on")

    # --- apps from the store ----------------------------------------------------------

    async def load_apps(self) -> None:
        """Static apps plus the store's (a store app overrides a static one by id).

        Raises (the registry untouched) when the store cannot be read, or answers with no
        app after it had some (:class:`StoreEmptied`).
        """
        assert self.store is not None
        loaded = await self.store.load()
        if not loaded and self._store_apps:
            raise StoreEmptied(f"the store has no apps (it had {self._store_apps})")
        self._store_apps = len(loaded)
        merged = {app.id: app for app in self.settings.apps}
        keys = {app.key: app.id for app in self.settings.apps}
        for app in loaded:
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
        registry = self.registry
        # Apps are updated in place, so whether each was enabled is noted before.
        serving = [app for app in registry if app.enabled]
        for app_id in registry.replace(merged.values()):
            self.outbox.reconfigure(app_id)
        await self._close_stopped_apps(serving)

    async def _close_stopped_apps(self, serving: list[App]) -> None:
        """Close the open connections of the apps among ``serving`` that this reload
        disabled (4003) or removed (4001), with the error a new connection to them gets
        (docs/protocol.md §2): a switched-off app stops serving now, not when its clients reconnect.

        Both codes are "refused" for pusher-js (docs/protocol.md §18), so no reconnect wave follows
        and the sockets are closed at once; other apps' connections are not touched.
        """
        registry = self.registry
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
                await close_in_batches(closing, code, message, 0.0)

    async def _refresh_apps(self) -> None:
        interval = self.settings.apps_store.refresh_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load_apps()
            except Exception as exc:
                self._store_failed(str(exc) or type(exc).__name__)
            else:
                self._store_back()

    def _store_failed(self, reason: str) -> None:
        """A reload failed: the apps last loaded stay, and the log and ``/ready`` say so.
        The error is logged when it starts, then at most once a minute."""
        now = time.monotonic()
        problem = self.store_problem
        since = now if problem is None else problem[1]
        self.store_problem = (reason, since)
        if problem is not None and now - self._store_logged_at < STORE_ERROR_LOG_INTERVAL:
            return
        self._store_logged_at = now
        log.error(
            "apps store unavailable (%s) for %.0f s: keeping the %d app(s) last loaded",
            reason,
            now - since,
            sum(1 for _ in self.registry),
        )

    def _store_back(self) -> None:
        if self.store_problem is not None:
            reason, since = self.store_problem
            self.store_problem = None
            log.warning(
                "apps store usable again after %.0f s (it was: %s)",
                time.monotonic() - since,
                reason,
            )
