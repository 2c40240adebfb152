"""The Pusher HTTP API endpoints, one method per endpoint, plus health and readiness.

Called by :mod:`clarion.server.connection` with the raw method, path, query and body;
returns a status and a JSON body. Signing, validation and limits are the protocol
core's; state questions go to the ChannelState, publishes to the hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import msgspec

from clarion import metrics
from clarion.apps import App, AppRegistry
from clarion.cluster.interfaces import BrokerUnavailable, ChannelState, RateLimiter
from clarion.hub.channels import Hub
from clarion.logs import OncePerInterval
from clarion.protocol import api, names
from clarion.protocol.api import PublishRequest
from clarion.protocol.errors import ApiError
from clarion.protocol.signing import parse_query, verify_request

log = logging.getLogger("clarion.http_api")
failures_log = OncePerInterval(log)
Response = tuple[int, bytes]
# An endpoint: an HttpApi method, called with the api (it is looked up once, unbound).
Endpoint = Callable[["HttpApi", "App", list[str], dict[str, str], bytes], Awaitable[Response]]
_encode = msgspec.json.encode
EMPTY_OBJECT = b"{}"
# GET /channels replies kept for reuse while the counts do not change (dashboards poll
# the same listing); a few, as each may be a few hundred KiB.
MAX_KEPT_LISTINGS = 16


class HttpApi:
    def __init__(
        self,
        registry: AppRegistry,
        hub: Hub,
        state: ChannelState,
        terminate_user: Callable[[str, str], None],
        is_ready: Callable[[], bool],
        webhook_status: Callable[[str], Awaitable[dict[str, Any]]],
        limiter: RateLimiter,
        clock: Callable[[], float] = time.time,
        ready_notes: Callable[[], dict[str, object]] = dict,
    ) -> None:
        # What /ready reports beside its verdict (say, apps served from a stale store).
        self.ready_notes = ready_notes
        self.limiter = limiter
        self.webhook_status = webhook_status
        self.registry = registry
        self.hub = hub
        self.state = state
        self.terminate_user = terminate_user
        self.is_ready = is_ready
        self.clock = clock
        self._listings: dict[tuple[str, str, frozenset[str]], tuple[int, bytes]] = {}

    async def handle(self, method: str, raw_path: str, raw_query: str, body: bytes) -> Response:
        """Answer one request: the one entry point of every endpoint, the signed publish
        included. With the in-memory state it completes without suspending, so the
        connection runs it through :func:`clarion.server.eager.run_eagerly` and no task
        is made; that is what keeps it the hot path of the API."""
        started = time.perf_counter()
        parts = raw_path.split("/")
        try:
            endpoint, answer = self._route(method, raw_path, parts, raw_query, body)
            response = await answer
        except ApiError as exc:
            endpoint = _endpoint_label(parts)
            response = exc.status, api.error_body(exc.status, exc.message)
        except BrokerUnavailable as exc:
            endpoint = _endpoint_label(parts)
            message = f"Not delivered to the whole cluster: {exc}"
            response = 503, api.error_body(503, message)
        except Exception as exc:
            endpoint = _endpoint_label(parts)
            # Once a minute per endpoint and exception type: a request that trips a bug
            # can be sent in a loop, and must not write a traceback each time.
            failures_log.log(
                logging.ERROR,
                f"{endpoint}:{type(exc).__name__}",
                "HTTP API request failed: %s %s",
                method,
                raw_path,
                exc_info=exc,
            )
            response = 500, api.error_body(500, "Internal server error")
        status = response[0]
        key = (endpoint, status)
        counts = metrics.http_requests
        counts[key] = counts.get(key, 0) + 1
        if status == 200 and endpoint in _PUBLISHES:
            metrics.publish_seconds.observe(time.perf_counter() - started)
        return response

    def _route(
        self, method: str, raw_path: str, parts: list[str], raw_query: str, body: bytes
    ) -> tuple[str, Awaitable[Response]]:
        """The endpoint's label for the metrics and its coroutine for this request, checked
        and signed; a request refused before any state is asked raises ApiError here. Not
        a coroutine itself: one frame less on every publish."""
        # Paths are rarely percent-encoded: unquote only when there is something to decode.
        quoted = "%" in raw_path
        if parts[0] != "" or len(parts) < 2:
            raise ApiError(404, f"Not found: {raw_path}")
        if len(parts) == 2 and parts[1] in ("", "up"):
            return "up", _answer(200, b'{"ok":true}')
        if len(parts) == 2 and parts[1] == "ready":
            ready = self.is_ready()
            notes = self.ready_notes()
            if notes:
                return "ready", _answer(200 if ready else 503, _encode({"ready": ready, **notes}))
            if ready:
                return "ready", _answer(200, b'{"ready":true}')
            return "ready", _answer(503, b'{"ready":false}')
        if parts[1] == "apps" and len(parts) >= 4:
            app_id = unquote(parts[2]) if quoted else parts[2]
            app = self.registry.by_id(app_id)
            if app is None:
                raise ApiError(404, f"Unknown app id {app_id!r}")
            rest = parts[3:]
        elif parts[1] == "users" and len(parts) == 4 and parts[3] == "terminate_connections":
            # pusher-http-python 3.3.x posts here without /apps/{id}: find the app by auth_key.
            params = parse_query(raw_query)
            found = self.registry.by_key(params.get("auth_key", ""))
            if found is None:
                raise ApiError(401, "Unknown auth_key")
            app = found
            rest = parts[1:]
        else:
            raise ApiError(404, f"Not found: {raw_path}")

        route = _ENDPOINTS.get((rest[0], len(rest)))
        if route is None or (route[2] is not None and rest[-1] != route[2]):
            raise ApiError(404, "Not found: /" + "/".join(rest))
        endpoint, wanted, _, run = route
        if method != wanted:
            raise ApiError(405, f"Method {method} not allowed here; use {wanted}")
        params = parse_query(raw_query)
        verify_request(method, raw_path, params, body, app.credentials, self.clock())
        if not app.config.enabled:
            raise ApiError(403, f"App {app.id} is disabled")
        if quoted:
            rest = [unquote(p) for p in rest]
        read_limit = app.config.max_read_requests_per_second
        if method == "GET" and read_limit is not None:
            return endpoint, self._read_limited(read_limit, run, app, rest, params, body)
        return endpoint, run(self, app, rest, params, body)

    async def _read_limited(
        self,
        limit: int,
        run: Endpoint,
        app: App,
        rest: list[str],
        params: dict[str, str],
        body: bytes,
    ) -> Response:
        if not await self.limiter.consume(f"read:{app.id}", 1, limit):
            raise ApiError(429, f"Too many read requests: the limit is {limit} per second")
        return await run(self, app, rest, params, body)

    # --- endpoints ------------------------------------------------------------------

    async def events(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        request = api.parse_publish(body, app.limits)
        if app.config.max_backend_events_per_second is not None:
            await self._check_event_rate(app, len(request.channels))
        await self.hub.publish(app.id, request)
        if not request.info:
            return 200, EMPTY_OBJECT
        channels = {ch: await self._info(app, ch, request.info) for ch in request.channels}
        return 200, _encode({"channels": channels})

    async def batch_events(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        requests = api.parse_batch(body, app.limits)
        await self._check_event_rate(app, sum(len(request.channels) for request in requests))
        unavailable: BrokerUnavailable | None = None
        for request in requests:
            try:
                await self.hub.publish(app.id, request)
            except BrokerUnavailable as exc:
                unavailable = exc  # the rest of the batch is still delivered locally
        if unavailable is not None:
            raise unavailable
        if not any(request.info for request in requests):
            return 200, EMPTY_OBJECT
        batch = [await self._batch_info(app, request) for request in requests]
        return 200, _encode({"batch": batch})

    async def _need_cluster_state(self) -> None:
        """State queries answer for the cluster or not at all: with the Redis link down
        this node knows only its own sockets, and a count that looks right but is not
        would mislead the caller more than an error."""
        if not await self.state.ready():
            raise ApiError(
                503, "Cluster state unavailable (the Redis link is down); try again shortly"
            )

    async def channels(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        prefix, info = api.parse_channels_query(params)
        await self._need_cluster_state()
        key = (app.id, prefix, info)
        kept = self._listings.get(key)
        if kept is not None and kept[0] == await self.state.listing_version(app.id):
            return 200, kept[1]
        occupied = await self.state.occupied_channels(app.id, prefix, "user_count" in info)
        counts = occupied.subscription_counts if "subscription_count" in info else None
        user_counts = occupied.user_counts if "user_count" in info else None
        body = api.channels_reply(occupied.names, counts, user_counts)
        if occupied.version is not None:
            self._listings.pop(key, None)
            self._listings[key] = (occupied.version, body)
            if len(self._listings) > MAX_KEPT_LISTINGS:
                del self._listings[next(iter(self._listings))]
        return 200, body

    async def channel(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        name = rest[1]
        info = api.parse_channel_query(name, params, app.limits.max_channel_name_length)
        await self._need_cluster_state()
        counts = await self.state.channel_counts(app.id, name)
        result: dict[str, Any] = {"occupied": counts.subscription_count > 0}
        if "user_count" in info:
            result["user_count"] = counts.user_count
        if "subscription_count" in info:
            result["subscription_count"] = counts.subscription_count
        if "cache" in info and names.is_cache_channel(name):
            cached = await self.state.cache_get(app.id, name)
            if cached is not None:
                result["cache"] = {"event": cached.event, "data": cached.data, "ttl": cached.ttl}
        return 200, _encode(result)

    async def users(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        name = rest[1]
        api.check_users_channel(name, app.limits.max_channel_name_length)
        await self._need_cluster_state()
        user_ids = await self.state.presence_user_ids(app.id, name)
        return 200, _encode({"users": [{"id": user_id} for user_id in user_ids]})

    async def terminate_connections(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        user_id = rest[1]
        if not user_id:
            raise ApiError(400, "Missing user id")
        self.terminate_user(app.id, user_id)
        return 200, EMPTY_OBJECT

    async def webhooks_status(
        self, app: App, rest: list[str], params: dict[str, str], body: bytes
    ) -> Response:
        """Clarion extension: webhook delivery counters of this app, per target."""
        return 200, _encode(await self.webhook_status(app.id))

    async def _check_event_rate(self, app: App, events: int) -> None:
        limit = app.config.max_backend_events_per_second
        if limit is not None and not await self.limiter.consume(f"events:{app.id}", events, limit):
            raise ApiError(
                429,
                f"Too many events: the limit is {limit} per second (each channel counts once)",
            )

    # --- info replies -----------------------------------------------------------------

    async def _info(self, app: App, channel: str, info: frozenset[str]) -> dict[str, int]:
        counts = await self.state.channel_counts(app.id, channel)
        entry: dict[str, int] = {}
        if "user_count" in info and names.channel_kind(channel) is names.ChannelKind.PRESENCE:
            entry["user_count"] = counts.user_count
        if "subscription_count" in info:
            entry["subscription_count"] = counts.subscription_count
        return entry

    async def _batch_info(self, app: App, request: PublishRequest) -> dict[str, int]:
        if not request.info:
            return {}
        return await self._info(app, request.channels[0], request.info)


async def _answer(status: int, body: bytes) -> Response:
    return status, body


# The endpoints by (first path segment after the app, number of segments): the name (also
# the method's and the metrics label), the HTTP method, the last segment the path must
# end with (None: any), and the method.
_ENDPOINTS: dict[tuple[str, int], tuple[str, str, str | None, Endpoint]] = {
    ("events", 1): ("events", "POST", None, HttpApi.events),
    ("batch_events", 1): ("batch_events", "POST", None, HttpApi.batch_events),
    ("channels", 1): ("channels", "GET", None, HttpApi.channels),
    ("channels", 2): ("channel", "GET", None, HttpApi.channel),
    ("channels", 3): ("users", "GET", "users", HttpApi.users),
    ("users", 3): (
        "terminate_connections",
        "POST",
        "terminate_connections",
        HttpApi.terminate_connections,
    ),
    ("webhooks", 2): ("webhooks_status", "GET", "status", HttpApi.webhooks_status),
}
# The endpoints whose answer time is clarion_publish_seconds.
_PUBLISHES = frozenset({"events", "batch_events"})

_LABELS = {
    ("", 2): "up",
    ("up", 2): "up",
    ("ready", 2): "ready",
    ("events", 4): "events",
    ("batch_events", 4): "batch_events",
    ("channels", 4): "channels",
    ("channels", 5): "channel",
    ("users", 6): "users",
    ("terminate_connections", 6): "terminate_connections",
    ("terminate_connections", 4): "terminate_connections",
    ("status", 5): "webhooks_status",
}


def _endpoint_label(parts: list[str]) -> str:
    """A bounded label for metrics (from the path split at "/"): the endpoint's name,
    never a channel or app id."""
    if len(parts) == 5 and parts[3] == "channels":
        return "channel"
    return _LABELS.get((parts[-1], len(parts)), "other")
