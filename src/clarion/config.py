"""One typed settings tree: built-in defaults, then a TOML file, then the environment,
then command-line flags (each overriding the one before), validated once at start.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from clarion.protocol.handshake import origin_pattern_error
from clarion.protocol.webhooks import EVENT_TYPES as WEBHOOK_EVENT_TYPES


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    # The demo app's secret is public (it is in the README): an app using it is served
    # on a loopback host only, unless this is set (also CLARION_ALLOW_DEMO_APP=1).
    allow_demo_app: bool = False
    port: int = 6001
    # Optional path prefix before /app/{key} (pusher-js option wsPath).
    path_prefix: str = ""
    # Largest WebSocket message accepted from a client; bigger ones close with 1009.
    max_frame_bytes: int = 100 * 1024
    # Largest HTTP API request body; bigger ones get 413.
    max_body_bytes: int = 1024 * 1024
    # A subscriber with more than this many bytes waiting to be written is closed (4100).
    write_buffer_limit: int = 1024 * 1024
    # Seconds to wait for any frame after the server's pusher:ping before closing with 4201.
    pong_timeout: float = 30.0
    # WebSocket connections from one IP address (0: no limit); more are refused with 4100.
    # The client's address: behind a proxy, set trusted_proxies or proxy_protocol.
    max_connections_per_ip: int = 1000
    # Proxies (CIDRs) whose X-Forwarded-For / Forwarded headers name the client: from one
    # of them, the client is the right-most address of the header that is not itself
    # trusted. From any other peer those headers are ignored. Default: none.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # Every connection starts with a PROXY protocol header (v1 or v2, from HAProxy or a
    # TCP load balancer) naming the client; a connection without one is closed. With
    # trusted_proxies set, only those peers may send it.
    proxy_protocol: bool = False
    # Seconds from the first byte of a request head to its end (and for a new socket to
    # send one); the socket is closed after it, however slowly the bytes trickle in.
    head_timeout: float = 10.0
    # Sockets from one address in the middle of a request head (0: no limit); the next
    # one gets 429 and is closed.
    max_unfinished_heads_per_ip: int = 16
    # WebSocket frames per second one connection may keep sending (after a burst of ten
    # seconds' worth plus twice max_channels_per_connection); past it, closed with 4100.
    max_messages_per_second: int = 100
    # File descriptors kept free under the open-file limit: a socket accepted into them
    # is served HTTP only (WebSocket upgrades refused with 4100) and makes room by closing
    # the oldest socket that has not sent a request.
    reserved_files: int = 64
    log_level: str = "info"
    # One log line per WebSocket connection, when it closes: app, socket id, address,
    # close code and how long it lasted.
    log_connections: bool = True
    # One log line per HTTP API request (method, path without the query, status, time).
    log_requests: bool = False
    # Seconds over which a graceful shutdown (SIGTERM) spreads the closing of connections,
    # so that clients reconnect to other nodes gradually (close code 4200).
    drain_window: float = 10.0
    # /ready answers 503 above these (None: no threshold), so a load balancer stops
    # sending new connections before the process falls over.
    ready_max_rss_mb: int | None = None
    ready_max_open_files: int | None = None
    # Where to write the process id (used by `clarion drain`).
    pid_file: str | None = None
    # TLS for WebSocket and HTTP API on the port (PEM files); reloaded on SIGHUP.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Optional CA bundle appended to the certificate chain sent to clients.
    tls_ca: str | None = None


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How webhooks are delivered, for every app (``[webhooks]``)."""

    # Seconds to wait for a receiver's answer.
    timeout: float = 10.0
    # Seconds after the first attempt during which failed deliveries are retried.
    retry_for: float = 300.0
    # Requests waiting per target; beyond it the oldest are dropped (and counted).
    max_queue: int = 10000
    # Bytes of encoded requests queued per target (waiting, retrying or in flight); beyond
    # it the oldest are dropped (and counted). Clients fill this queue (client events):
    # 64 MiB holds ~7,000 client events of the largest size, far more small ones.
    max_queue_bytes: int = 64 * 1024 * 1024
    # Requests in flight per target.
    concurrency: int = 4
    # Seconds a graceful shutdown waits for pending webhooks.
    shutdown_deadline: float = 5.0


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Prometheus metrics on a port of their own (``[metrics]``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    # 0 picks a free port; with --workers N, worker i listens on port + i.
    port: int = 9601


class AdminSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The built-in admin console (``[admin]``): on when a token is set."""

    host: str = "127.0.0.1"
    port: int = 9602
    # At least 16 characters (also CLARION_ADMIN_TOKEN); None: no console.
    token: str | None = None


class AppsStoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Apps from a database besides ``[[apps]]`` (``[apps_store]``)."""

    # sqlite:////absolute/path.db (sqlite:///relative.db), postgresql://..., mysql://...
    url: str | None = None
    # Seconds between reloads of the apps from the store.
    refresh_seconds: float = 2.0


class ClusterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How nodes share state (``[cluster]``)."""

    # "memory": this process alone; "redis": every node on the same Redis is one server;
    # "redis-cluster": the same on a Redis Cluster (redis_url names seed nodes).
    adapter: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Key and channel prefix, so several Clarion clusters can share one Redis.
    prefix: str = "clarion"
    # Seconds a node's lease lasts; a node that stops renewing it (crash, power loss) is
    # removed by the others after this long, with member_removed/channel_vacated sent.
    node_lease: float = 10.0
    # Seconds Redis has to acknowledge a publish (and answer the health ping): an HTTP
    # publish is answered 200 only once Redis took its frames, 503 after this long, and
    # the link is then marked down (a frozen Redis is treated as one that went away).
    publish_timeout: float = 1.0
    # Redis Sentinel: "host:port" of each sentinel (or a redis:// / rediss:// URL with the
    # sentinels' own password and TLS options). When set, the master is the one these
    # sentinels name ``sentinel_master``, followed through failovers; redis_url then gives
    # only the master's password, database and TLS options, not its address.
    sentinels: list[str] = msgspec.field(default_factory=list)
    sentinel_master: str = "mymaster"


class WebhookTarget(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    event_types: list[str]
    channel_prefix: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class AppConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    key: str
    secret: str
    name: str = ""
    enabled: bool = True
    # Seconds; announced in connection_established and drives the server's ping.
    activity_timeout: int = 120
    # Maximum concurrent WebSocket connections for the app (None: no limit).
    max_connections: int | None = None
    # Events published through the HTTP API per second, each channel counting once
    # (None: no limit); more get 429.
    max_backend_events_per_second: int | None = None
    # HTTP API read requests (GET) per second (None: no limit); more get 429.
    max_read_requests_per_second: int | None = None
    # Distinct members of one presence channel.
    max_presence_members: int = 100
    # Channels one connection may be subscribed to at once.
    max_channels_per_connection: int = 1000
    # Client events (client-*) on private and presence channels; off by default, as on Pusher.
    client_events: bool = False
    # Client events per second per connection; more are refused with pusher:error 4301.
    client_event_rate_limit: int = 10
    # Send pusher_internal:watchlist_events to signed-in users with a watchlist.
    watchlist_events: bool = True
    # Send pusher_internal:subscription_count to subscribers of non-presence channels.
    subscription_count_events: bool = False
    # Seconds a connection may stay without signing in (or subscribing to an authorised
    # channel) before it is closed with 4009 (None: never).
    user_authentication_timeout: float | None = None
    # What one event may carry, from the HTTP API and from clients (Pusher's limits by
    # default): data size in KiB (413 / pusher:error when larger), event and channel name
    # lengths, channels per publish, events per batch (400 when over).
    max_event_payload_kb: int = 10
    max_event_name_length: int = 200
    max_channel_name_length: int = 200
    max_event_channels: int = 100
    max_batch_size: int = 10
    # Origins whose browsers may connect ("https://app.example.com", "https://*.example.org":
    # subdomains only; the port must match when given). A connection with another Origin
    # header is refused with 4009; one without an Origin (native apps, servers) is not.
    # ["*"]: any origin.
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    # Webhook targets of this app ([[apps.webhooks]]).
    webhooks: list[WebhookTarget] = msgspec.field(default_factory=list)
    # Seconds channel_vacated / member_removed / user_offline are held back; cancelled
    # if the channel is re-occupied (the user rejoins) meanwhile. 0 sends them at once.
    webhook_delay: float = 3.0
    # Seconds during which events are gathered into one request (0: one event each).
    webhook_batch_window: float = 0.05


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    apps_store: AppsStoreSettings = msgspec.field(default_factory=AppsStoreSettings)
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)
    apps: list[AppConfig] = msgspec.field(default_factory=list)


DEMO_APP = {"id": "1", "key": "app-key", "secret": "app-secret"}

_ENV_SERVER = {
    "CLARION_HOST": "host",
    "CLARION_PORT": "port",
    "CLARION_LOG_LEVEL": "log_level",
    "CLARION_DRAIN_WINDOW": "drain_window",
    "CLARION_ALLOW_DEMO_APP": "allow_demo_app",
    "CLARION_PROXY_PROTOCOL": "proxy_protocol",
}
_ENV_CLUSTER = {
    "CLARION_CLUSTER_ADAPTER": "adapter",
    "CLARION_REDIS_URL": "redis_url",
    "CLARION_REDIS_SENTINEL_MASTER": "sentinel_master",
}
_ENV_APP = {"CLARION_APP_ID": "id", "CLARION_APP_KEY": "key", "CLARION_APP_SECRET": "secret"}


def load(
    config_path: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings; raise ConfigError with a clear message on any problem."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {
        "server": {},
        "apps": [],
        "cluster": {},
        "metrics": {},
        "apps_store": {},
        "admin": {},
    }
    path = config_path or env.get("CLARION_CONFIG")
    if path:
        try:
            with Path(path).open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"Config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"Cannot read config file {path}: {exc}") from None
        if not isinstance(raw.get("server", {}), dict):
            raise ConfigError("[server] must be a table")
        raw.setdefault("server", {})
        if not isinstance(raw.get("apps", []), list):
            raise ConfigError("apps must be an array of tables: write [[apps]]")
        raw.setdefault("apps", [])
        for table in ("cluster", "metrics", "webhooks", "apps_store", "admin"):
            if not isinstance(raw.get(table, {}), dict):
                raise ConfigError(f"[{table}] must be a table")
            raw.setdefault(table, {})

    server = raw["server"]
    for var, field in _ENV_SERVER.items():
        if var in env:
            server[field] = env[var]
    if "CLARION_TRUSTED_PROXIES" in env:
        # Comma-separated CIDRs (a compose file or a container's environment).
        cidrs = env["CLARION_TRUSTED_PROXIES"].split(",")
        server["trusted_proxies"] = [cidr.strip() for cidr in cidrs if cidr.strip()]
    for var, field in _ENV_CLUSTER.items():
        if var in env:
            raw["cluster"][field] = env[var]
    if "CLARION_REDIS_SENTINELS" in env:
        # Comma-separated host:port (or URLs), as a container's environment gives them.
        entries = env["CLARION_REDIS_SENTINELS"].split(",")
        raw["cluster"]["sentinels"] = [entry.strip() for entry in entries if entry.strip()]
    if "CLARION_METRICS_PORT" in env:
        raw["metrics"]["port"] = env["CLARION_METRICS_PORT"]
    if "CLARION_APPS_STORE" in env:
        raw["apps_store"]["url"] = env["CLARION_APPS_STORE"]
    if "CLARION_ADMIN_TOKEN" in env:
        raw["admin"]["token"] = env["CLARION_ADMIN_TOKEN"]
    if "CLARION_ADMIN_PORT" in env:
        raw["admin"]["port"] = env["CLARION_ADMIN_PORT"]
    if "CLARION_METRICS_HOST" in env:
        raw["metrics"]["host"] = env["CLARION_METRICS_HOST"]
    app_env = {field: env[var] for var, field in _ENV_APP.items() if var in env}
    if app_env:
        if len(raw["apps"]) > 1:
            raise ConfigError(
                "CLARION_APP_ID/KEY/SECRET configure the single-app case, but the config file "
                f"defines {len(raw['apps'])} apps; set them in the file instead"
            )
        app = dict(raw["apps"][0]) if raw["apps"] else dict(DEMO_APP)
        app.update(app_env)
        raw["apps"] = [app]
    for name, value in (flags or {}).items():
        if value is not None:
            server[name] = value
    if not raw["apps"] and not raw["apps_store"].get("url"):
        raw["apps"] = [dict(DEMO_APP)]
    return from_mapping(raw)


def _where(message: str) -> str:
    # msgspec says "at `$.apps[0].key`"; users think in TOML terms.
    return message.replace("`$.", "`").replace("$.", "")


def from_mapping(raw: Mapping[str, Any]) -> Settings:
    """Settings from tables shaped like the TOML file's (``{"server": {...}, "apps": [...]}``),
    checked as the file is: for :class:`clarion.Server` and the tests' plugin."""
    _refuse_redacted(raw, "")
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"Invalid configuration: {_where(str(exc))}") from None
    _validate(settings)
    _check_demo_app(settings)
    return settings


def validate_apps(apps: list[AppConfig]) -> None:
    """The per-app rules of _validate, for apps that come from a store."""
    _validate(Settings(apps=apps))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _check_demo_app(settings: Settings) -> None:
    """Refuse to serve the demo app's public secret where others can reach it."""
    host = settings.server.host
    if settings.server.allow_demo_app or is_loopback(host):
        return
    demo = [app.id for app in settings.apps if app.secret == DEMO_APP["secret"]]
    if not demo:
        return
    if settings.apps == [msgspec.convert(DEMO_APP, AppConfig)]:
        what = "No app is configured, so the demo app (whose secret is public) would be served"
    else:
        what = f"App {demo[0]} uses the demo app's public secret and would be served"
    raise ConfigError(
        f"{what} on {host}, where anyone who reaches the port could publish. Configure an app "
        "with CLARION_APP_ID, CLARION_APP_KEY and CLARION_APP_SECRET (or [[apps]] in the "
        "config file, or an [apps_store]), listen on 127.0.0.1, or opt in with "
        "--allow-demo-app (CLARION_ALLOW_DEMO_APP=1, [server] allow_demo_app = true)."
    )


def _validate(settings: Settings) -> None:
    server = settings.server
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"server.port must be between 0 and 65535, got {server.port}")
    if server.path_prefix and (
        not server.path_prefix.startswith("/") or server.path_prefix.endswith("/")
    ):
        raise ConfigError("server.path_prefix must start with / and not end with / (e.g. /ws)")
    for field in ("max_frame_bytes", "max_body_bytes", "write_buffer_limit"):
        if getattr(server, field) < 1024:
            raise ConfigError(f"server.{field} must be at least 1024 bytes")
    if server.max_connections_per_ip < 0:
        raise ConfigError("server.max_connections_per_ip must be >= 0 (0: no limit)")
    for cidr in server.trusted_proxies:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies: {cidr!r} is not a network (e.g. 10.0.0.0/8)"
            ) from None
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError("server.tls_cert and server.tls_key go together: set both or neither")
    for field in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(server, field)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"server.{field}: cannot read {path}")
    admin = settings.admin
    if admin.token is not None and len(admin.token) < 16:
        raise ConfigError("admin.token must be at least 16 characters")
    if not 0 <= admin.port <= 65535:
        raise ConfigError(f"admin.port must be between 0 and 65535, got {admin.port}")
    if server.drain_window < 0:
        raise ConfigError("server.drain_window must be >= 0")
    if server.pong_timeout <= 0:
        raise ConfigError("server.pong_timeout must be positive")
    if server.head_timeout <= 0:
        raise ConfigError("server.head_timeout must be positive")
    if server.max_unfinished_heads_per_ip < 0:
        raise ConfigError("server.max_unfinished_heads_per_ip must be >= 0 (0: no limit)")
    if server.max_messages_per_second < 1:
        raise ConfigError("server.max_messages_per_second must be at least 1")
    if server.reserved_files < 0:
        raise ConfigError("server.reserved_files must be >= 0")
    if server.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("server.log_level must be one of debug, info, warning, error")
    ids: set[str] = set()
    keys: set[str] = set()
    for index, app in enumerate(settings.apps):
        where = f"apps[{index}]"
        for field in ("id", "key", "secret"):
            if not getattr(app, field):
                raise ConfigError(f"{where}.{field} must not be empty")
        if any(c in app.id or c in app.key for c in "/:"):
            raise ConfigError(f"{where}: id and key must not contain '/' or ':'")
        if app.id in ids:
            raise ConfigError(f"{where}.id {app.id!r} is used by another app")
        if app.key in keys:
            raise ConfigError(f"{where}.key {app.key!r} is used by another app")
        ids.add(app.id)
        keys.add(app.key)
        if app.activity_timeout < 1:
            raise ConfigError(f"{where}.activity_timeout must be at least 1 second")
        if app.max_connections is not None and app.max_connections < 0:
            raise ConfigError(f"{where}.max_connections must not be negative")
        for limit in (
            "max_backend_events_per_second",
            "max_read_requests_per_second",
            "max_presence_members",
            "max_channels_per_connection",
            "max_event_payload_kb",
            "max_event_name_length",
            "max_channel_name_length",
            "max_event_channels",
            "max_batch_size",
        ):
            value = getattr(app, limit)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{limit} must be at least 1")
        if app.client_event_rate_limit < 1:
            raise ConfigError(f"{where}.client_event_rate_limit must be at least 1")
        if app.user_authentication_timeout is not None and app.user_authentication_timeout <= 0:
            raise ConfigError(f"{where}.user_authentication_timeout must be positive")
        for origin in app.allowed_origins:
            problem = origin_pattern_error(origin)
            if problem:
                raise ConfigError(f"{where}.allowed_origins: {problem}")
        if app.webhook_delay < 0 or app.webhook_batch_window < 0:
            raise ConfigError(f"{where}: webhook_delay and webhook_batch_window must be >= 0")
        for number, target in enumerate(app.webhooks):
            spot = f"{where}.webhooks[{number}]"
            if not target.url.startswith(("http://", "https://")):
                raise ConfigError(f"{spot}.url must be an http:// or https:// URL")
            unknown = set(target.event_types) - WEBHOOK_EVENT_TYPES
            if unknown or not target.event_types:
                raise ConfigError(
                    f"{spot}.event_types must list some of {sorted(WEBHOOK_EVENT_TYPES)}"
                    + (f"; unknown: {sorted(unknown)}" if unknown else "")
                )
    if settings.apps_store.refresh_seconds <= 0:
        raise ConfigError("apps_store.refresh_seconds must be positive")
    if not 0 <= settings.metrics.port <= 65535:
        raise ConfigError(f"metrics.port must be between 0 and 65535, got {settings.metrics.port}")
    cluster = settings.cluster
    if cluster.adapter not in ("memory", "redis", "redis-cluster"):
        raise ConfigError(
            f'cluster.adapter must be "memory", "redis" or "redis-cluster", got {cluster.adapter!r}'
        )
    if cluster.adapter == "redis-cluster":
        from clarion.cluster.redis.topology import seeds  # redis-py only when asked for

        try:
            seeds(cluster.redis_url)
        except ValueError as exc:
            raise ConfigError(f"cluster.redis_url: {exc}") from None
        if "{" in cluster.prefix or "}" in cluster.prefix:
            raise ConfigError("cluster.prefix must contain no '{' or '}' on Redis Cluster")
    if cluster.adapter == "redis" and not cluster.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError("cluster.redis_url must start with redis://, rediss:// or unix://")
    if not cluster.prefix or ":" in cluster.prefix:
        raise ConfigError("cluster.prefix must be non-empty and contain no ':'")
    if cluster.sentinels:
        if cluster.adapter != "redis":
            raise ConfigError(
                "cluster.sentinels is for adapter = \"redis\" (a Redis Cluster fails over "
                "by itself: give its nodes in redis_url)"
            )
        _validate_sentinels(cluster)
    if cluster.node_lease < 2:
        raise ConfigError("cluster.node_lease must be at least 2 seconds")
    if not 0.05 <= cluster.publish_timeout <= 30:
        raise ConfigError("cluster.publish_timeout must be between 0.05 and 30 seconds")
    hooks = settings.webhooks
    if hooks.timeout <= 0 or hooks.retry_for < 0 or hooks.shutdown_deadline < 0:
        raise ConfigError("webhooks.timeout must be positive, retry_for and deadline >= 0")
    if hooks.max_queue < 1 or hooks.concurrency < 1:
        raise ConfigError("webhooks.max_queue and webhooks.concurrency must be at least 1")
    if hooks.max_queue_bytes < 1024 * 1024:
        raise ConfigError("webhooks.max_queue_bytes must be at least 1048576 (1 MiB)")


def sentinel_url(entry: str) -> str:
    """A ``[cluster] sentinels`` entry as a URL: ``host:port`` is ``redis://host:port``."""
    return entry if "://" in entry else f"redis://{entry}"


def _validate_sentinels(cluster: ClusterSettings) -> None:
    if not cluster.sentinel_master:
        raise ConfigError("cluster.sentinel_master must name the master the sentinels watch")
    if not cluster.redis_url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "with cluster.sentinels, cluster.redis_url must start with redis:// or rediss:// "
            "(it gives the master's password, database and TLS options)"
        )
    for index, entry in enumerate(cluster.sentinels):
        where = f"cluster.sentinels[{index}]"
        parts = urlsplit(sentinel_url(entry))
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname or port is None:
            raise ConfigError(
                f"{where} must be host:port or redis://[:password@]host:port "
                f"(rediss:// for TLS), got {redact_url(entry)!r}"
            )
        if parts.path not in ("", "/"):
            raise ConfigError(f"{where}: a sentinel has no database, drop {parts.path!r}")


# What `clarion config` prints in place of a secret. It is no secret anyone would choose,
# and the loader refuses it: a printed configuration fed back must not serve this text
# as the real secret.
REDACTED = "<redacted>"

# Where the real value of a redacted setting can go instead, for the refusal's message.
_ENV_HINTS = {
    "secret": "CLARION_APP_SECRET",
    "cluster.redis_url": "CLARION_REDIS_URL",
    "cluster.sentinels": "CLARION_REDIS_SENTINELS",
    "apps_store.url": "CLARION_APPS_STORE",
}


def redact(secret: str) -> str:
    """A secret as shown: the marker, whatever the secret."""
    return REDACTED


def _refuse_redacted(value: object, where: str) -> None:
    """Raise ConfigError at the first string that holds the REDACTED marker."""
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_redacted(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_redacted(item, f"{where}[{index}]")
    elif isinstance(value, str) and REDACTED in value:
        secret = where.endswith(".secret") or ".headers." in where
        hint = (
            _ENV_HINTS["secret"]
            if where.endswith(".secret")
            else _ENV_HINTS.get(where.partition("[")[0])  # any entry of a list
        )
        raise ConfigError(
            f"{where} is a redacted placeholder ({REDACTED}, as `clarion config` prints it): "
            f"put the real {'secret' if secret else 'value'} here"
            + (f" or in {hint}" if hint else "")
        )


def describe(settings: Settings) -> str:
    """The effective configuration as TOML that loads again (``clarion config``), every
    secret (app secrets, header values, URL passwords and query values) replaced by
    REDACTED, which the loader refuses."""
    lines = ["[server]", *_fields(settings.server), "", "[webhooks]", *_fields(settings.webhooks)]
    lines += ["", "[cluster]", *_fields(settings.cluster)]
    lines += ["", "[metrics]", *_fields(settings.metrics)]
    lines += ["", "[apps_store]", *_fields(settings.apps_store)]
    lines += ["", "[admin]", *_fields(settings.admin)]
    for app in settings.apps:
        lines += ["", "[[apps]]", *_fields(app, skip={"webhooks"})]
        for target in app.webhooks:
            lines += ["", "[[apps.webhooks]]", *_fields(target)]
    return "\n".join(lines) + "\n"


def _fields(struct: msgspec.Struct, skip: frozenset[str] | set[str] = frozenset()) -> list[str]:
    lines = []
    for field in struct.__struct_fields__:
        value = getattr(struct, field)
        if field in skip or value is None:
            continue  # TOML has no null: an unset setting is left out
        if field in ("secret", "token"):
            value = redact(value)
        elif field in ("redis_url", "url"):
            value = redact_url(value, REDACTED)
        elif field == "sentinels":
            value = [redact_url(entry, REDACTED) for entry in value]
        elif field == "headers":
            # Header values often carry credentials (Authorization): never print them.
            value = {name: redact(v) for name, v in value.items()}
        lines.append(f"{field} = {_toml(value)}")
    return lines


def redact_url(url: str, mask: str = "****") -> str:
    """Hide what a URL may carry of credentials: the password of
    ``redis://user:password@host`` and the value of each query argument
    (``?token=...``), each replaced by ``mask``."""
    url, question, query = url.partition("?")
    if question:
        query, hash_, _ = query.partition("#")
        masked = "&".join(
            name + (f"={mask}" if equals else "")
            for name, equals, _ in (part.partition("=") for part in query.split("&"))
        )
        return redact_url(url, mask) + "?" + masked + (f"#{mask}" if hash_ else "")
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':' + mask if colon else ''}@{host}"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)
