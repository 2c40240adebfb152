"""The admin console's HTTP server: its own port (``[admin]``), on the node's event loop.

A deliberately small HTTP/1.1 server on asyncio streams (one request per connection,
bounded head and body, absolute timeouts): the console has a handful of routes and a
few users, and the node already runs on asyncio, so no web framework is pulled in.

Routes (everything under ``/admin``):

- ``GET /admin/``, ``GET /admin/apps/{id}``: the page (a sign-in form without a
  session). ``?token=...`` opens a session and redirects to the same path without it.
- ``POST /admin/login`` (form field ``token``), ``POST /admin/logout``.
- ``GET /admin/static/{file}``: the page's script and style (no data in them).
- ``GET /admin/api/overview``, ``/admin/api/apps/{id}/channels``,
  ``/admin/api/apps/{id}/channels/{name}``, ``/admin/api/apps/{id}/webhooks``,
  ``/admin/api/apps/{id}/errors``: JSON; ``/admin/api/apps/{id}/stream``: the live
  rows as Server-Sent Events. All 401 without a session.
- ``POST /admin/api/apps/{id}/events``: "Send an event", through the HTTP API's own
  validation and publish path; ``POST /admin/api/apps/{id}/webhooks/retry/{n}``: send
  a given-up webhook delivery again. Both need the session and a same-origin ``Origin``
  (403).

No app secret is in any answer: apps are shown by id, name and key state only.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec

from clarion.admin import auth
from clarion.admin.taps import TYPES
from clarion.cluster.interfaces import BrokerUnavailable
from clarion.config import redact_url
from clarion.protocol import api
from clarion.protocol.errors import ApiError

if TYPE_CHECKING:
    from clarion.server.node import Node

log = logging.getLogger("clarion.admin")
_encode = msgspec.json.encode

MAX_HEAD = 16 * 1024
MAX_BODY = 256 * 1024
# Requests and streams open at once.
MAX_CLIENTS = 64
# Seconds a client has to send its whole request.
REQUEST_TIMEOUT = 10.0
# Seconds between keep-alive comments on an idle stream.
STREAM_PING = 15.0
# Seconds a stream gathers rows after the first one before writing them: on a busy app
# one write (and one wake-up of the stream) per batch instead of per row.
STREAM_BATCH = 0.05
# The overview chart: a point every SAMPLE_EVERY seconds, HISTORY points (5 minutes).
SAMPLE_EVERY = 2.0
HISTORY = 150
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = (
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: same-origin\r\n"
    "X-Frame-Options: DENY\r\n"
    "Content-Security-Policy: default-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'\r\n"
    "Cache-Control: no-store\r\n"
)


class Request:
    __slots__ = ("body", "headers", "method", "path", "query", "reader")

    def __init__(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = b""
        self.reader: asyncio.StreamReader | None = None


class BadRequest(Exception):
    pass


def _static(name: str) -> bytes | None:
    if "/" in name or name.startswith("."):
        return None
    path = resources.files("clarion.admin").joinpath("static", name)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None


class AdminServer:
    """The console of one node."""

    def __init__(self, node: Node, token: str) -> None:
        self.node = node
        self.sessions = auth.Sessions(token)
        self.taps = node.hub.taps
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.Task[None]] = set()
        # Per app: (when, messages sent) at the last sample, and the rate it gave.
        self._last_sent: dict[str, tuple[float, float]] = {}
        self._rates: dict[str, float] = {}
        # The overview's chart: node-wide connections and messages/s, one per SAMPLE_EVERY.
        self.history: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self._sampler: asyncio.Task[None] | None = None
        self.node_name = self.taps.node
        self.started = time.time()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, limit=MAX_HEAD
        )
        self._sampler = asyncio.create_task(self._sample())
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    def sample(self) -> None:
        """Messages/s per app since the last sample, and a point of the chart."""
        now = time.monotonic()
        for app in self.node.registry:
            sent = _messages_sent(app.id)
            last = self._last_sent.get(app.id)
            if last is not None and now > last[0]:
                self._rates[app.id] = max(0.0, (sent - last[1]) / (now - last[0]))
            self._last_sent[app.id] = (now, sent)
        ctx = self.node.ctx
        conns = len(ctx.connections) + sum(ctx.connections_elsewhere.values())
        self.history.append({"conns": conns, "rate": round(sum(self._rates.values()), 1)})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sampler is not None:
            self._sampler.cancel()
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=1.0)

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._streams) >= MAX_CLIENTS:
            # A console is a few requests at a time: more is a client gone wrong.
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            try:
                request = await asyncio.wait_for(self._read(reader), REQUEST_TIMEOUT)
            except (BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                self._reply(writer, 400, b"Bad request", "text/plain; charset=utf-8")
                return
            except TimeoutError:
                return
            try:
                await self._route(request, writer)
            except Exception:
                log.exception("admin request failed: %s %s", request.method, request.path)
                self._reply(writer, 500, b'{"error":"Internal error"}')
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 5.0)
            writer.close()
            if task is not None:
                self._streams.discard(task)

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise BadRequest("head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise BadRequest("bad request line")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest("bad header")
            headers[name.strip().lower()] = value.strip()
        split = urlsplit(target)
        request = Request(method, unquote(split.path), parse_qs(split.query), headers)
        request.reader = reader
        length = int(headers.get("content-length", "0") or "0")
        if length < 0 or length > MAX_BODY:
            raise BadRequest("body too large")
        if length:
            request.body = await reader.readexactly(length)
        return request

    def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: str = "",
    ) -> None:
        reason = {
            200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 500: "Error",
        }.get(status, "Status")  # fmt: skip
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{SECURITY_HEADERS}{extra}\r\n"
        )
        writer.write(head.encode("latin-1") + body)

    def _json(self, writer: asyncio.StreamWriter, status: int, value: Any) -> None:
        self._reply(writer, status, _encode(value))

    async def _route(self, request: Request, writer: asyncio.StreamWriter) -> None:
        path, method = request.path, request.method
        session = self.sessions.valid(request.headers.get("cookie"))
        if path == "/admin":
            self._reply(writer, 303, b"", extra="Location: /admin/\r\n")
            return
        if not path.startswith("/admin/"):
            self._reply(writer, 404, b'{"error":"Not found"}')
            return
        parts = path[len("/admin/") :].split("/")
        if parts[0] == "static" and len(parts) == 2 and method == "GET":
            data = _static(parts[1])
            if data is None:
                self._reply(writer, 404, b'{"error":"Not found"}')
            else:
                kind = STATIC_TYPES.get(os.path.splitext(parts[1])[1], "application/octet-stream")
                self._reply(writer, 200, data, kind)
            return
        if parts[0] == "api":
            await self._api(request, writer, parts[1:], session)
            return
        if parts == ["login"]:
            await self._login(request, writer)
            return
        if parts == ["logout"]:
            if method != "POST" or session is None or not self._same_origin(request):
                self._json(writer, 403, {"error": "Forbidden"})
                return
            self.sessions.close(session)
            extra = f"Set-Cookie: {auth.clear_cookie()}\r\nLocation: /admin/\r\n"
            self._reply(writer, 303, b"", extra=extra)
            return
        if method != "GET":
            self._json(writer, 405, {"error": "Method not allowed"})
            return
        if parts == [""] or (len(parts) == 2 and parts[0] == "apps" and parts[1]):
            token = request.query.get("token")
            if token is not None:
                if self.sessions.token_ok(token[0]):
                    new = self.sessions.open()
                    extra = f"Set-Cookie: {auth.set_cookie(new)}\r\nLocation: {quote(path)}\r\n"
                    self._reply(writer, 303, b"", extra=extra)
                else:
                    self._page(writer, 401, sign_in=True, wrong=True)
                return
            if session is None:
                self._page(writer, 401, sign_in=True)
            else:
                self._page(writer, 200, sign_in=False)
            return
        self._reply(writer, 404, b'{"error":"Not found"}')

    def _same_origin(self, request: Request) -> bool:
        return auth.same_origin(request.headers.get("origin"), request.headers.get("host"))

    async def _login(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.method == "GET":
            self._reply(writer, 303, b"", extra="Location: /admin/\r\n")
            return
        if request.method != "POST" or not self._same_origin(request):
            self._json(writer, 403, {"error": "Forbidden"})
            return
        form = parse_qs(request.body.decode("utf-8", "replace"))
        token = form.get("token", [""])[0]
        target = form.get("next", ["/admin/"])[0]
        if not target.startswith("/admin/") or "//" in target:
            target = "/admin/"
        if not self.sessions.token_ok(token):
            self._page(writer, 401, sign_in=True, wrong=True, next_path=target)
            return
        new = self.sessions.open()
        extra = f"Set-Cookie: {auth.set_cookie(new)}\r\nLocation: {quote(target)}\r\n"
        self._reply(writer, 303, b"", extra=extra)

    def _page(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        sign_in: bool,
        wrong: bool = False,
        next_path: str = "/admin/",
    ) -> None:
        page = _static("signin.html" if sign_in else "index.html") or b""
        if sign_in:
            note = b'<p class="wrong" role="alert">Wrong token.</p>' if wrong else b""
            page = page.replace(b"<!--NOTE-->", note)
            page = page.replace(b'value="/admin/"', b'value="%s"' % html.escape(next_path).encode())
        self._reply(writer, status, page, "text/html; charset=utf-8")

    # --- the JSON API -------------------------------------------------------------------

    async def _api(
        self, request: Request, writer: asyncio.StreamWriter, parts: list[str], session: str | None
    ) -> None:
        if session is None:
            self._json(writer, 401, {"error": "Sign in first"})
            return
        if request.method not in ("GET", "HEAD") and not self._same_origin(request):
            self._json(writer, 403, {"error": "Cross-origin request refused"})
            return
        node = self.node
        if parts == ["overview"] and request.method == "GET":
            self._json(writer, 200, await self.overview())
            return
        if len(parts) < 3 or parts[0] != "apps":
            self._json(writer, 404, {"error": "Not found"})
            return
        app = node.registry.by_id(parts[1])
        if app is None:
            self._json(writer, 404, {"error": f"Unknown app id {parts[1]!r}"})
            return
        what = parts[2:]
        if request.method == "POST":
            if what == ["events"]:
                await self._send_event(app, request, writer)
            elif len(what) == 3 and what[:2] == ["webhooks", "retry"] and what[2].isdigit():
                retried = node.outbox.deliveries.retry_given_up(app.id, int(what[2]))
                if retried:
                    self._json(writer, 200, {"retried": True})
                else:
                    self._json(writer, 404, {"error": "No such given-up delivery"})
            else:
                self._json(writer, 404, {"error": "Not found"})
            return
        if what == ["channels"]:
            prefix = request.query.get("prefix", [""])[0]
            self._json(writer, 200, await self.channels(app.id, prefix))
        elif len(what) == 2 and what[0] == "channels":
            self._json(writer, 200, await self.channel(app.id, what[1]))
        elif what == ["webhooks"]:
            status = await node.outbox.status(app.id)
            recent = list(self.taps.deliveries.get(app.id, ()))
            given_up = [
                {
                    "id": entry.number,
                    "time": entry.time,
                    "url": redact_url(entry.target.config.url),
                    "events": entry.job.count,
                    "attempts": entry.job.attempts,
                    "error": entry.error,
                }
                for entry in node.outbox.deliveries.given_up.get(app.id, ())
            ]
            self._json(writer, 200, {**status, "recent": recent, "given_up": given_up})
        elif what == ["errors"]:
            self._json(writer, 200, {"errors": self.taps.error_groups(app.id)})
        elif what == ["stream"]:
            await self._stream(app.id, request, writer)
        else:
            self._json(writer, 404, {"error": "Not found"})

    async def overview(self) -> dict[str, Any]:
        node = self.node
        ctx = node.ctx
        sizes = node.hub.sizes()
        apps = []
        for app in node.registry:
            rate = self._rates.get(app.id, 0.0)
            connections = ctx.connections_per_app.get(app.id, 0) + ctx.connections_elsewhere.get(
                app.id, 0
            )
            apps.append(
                {
                    "id": app.id,
                    "name": app.config.name,
                    "enabled": app.enabled,
                    "connections": connections,
                    "channels": sizes["channels"].get(app.id, 0),
                    "messages_per_second": round(rate, 1),
                }
            )
        return {
            "apps": apps,
            **(await self.nodes()),
            "types": TYPES,
            "history": list(self.history),
        }

    async def nodes(self) -> dict[str, Any]:
        """The cluster's nodes from its membership data (``cluster``: false and this node
        alone in a single process, or while Redis cannot be asked)."""
        listed = await self.node.backend.state.nodes()
        here = len(self.node.ctx.connections)
        if listed is None:
            alone = {"name": self.node_name, "connections": here, "this": True}
            return {
                "cluster": False,
                "nodes": [{**alone, "up_since": self.started, "heartbeat_age": None}],
            }
        nodes = [
            {
                "name": info.name,
                # This node's count is live; the others' are a second old at most.
                "connections": here if info.this else info.connections,
                "up_since": info.up_since,
                "heartbeat_age": round(info.heartbeat_age, 1),
                "this": info.this,
            }
            for info in listed
        ]
        return {"cluster": True, "nodes": sorted(nodes, key=lambda n: n["name"])}

    async def channels(self, app_id: str, prefix: str) -> dict[str, Any]:
        state = self.node.backend.state
        occupied = await state.occupied_channels(app_id, prefix, True)
        rows = []
        users = occupied.user_counts
        for i, name in enumerate(occupied.names[:500]):
            # The state may hand counts over as text (Redis replies): numbers here.
            count = int(occupied.subscription_counts[i])
            row: dict[str, Any] = {"name": name, "subscriptions": count}
            if users is not None and name.startswith("presence-"):
                row["users"] = int(users[i])
            rows.append(row)
        return {"channels": rows, "total": len(occupied.names)}

    async def channel(self, app_id: str, name: str) -> dict[str, Any]:
        state = self.node.backend.state
        counts = await state.channel_counts(app_id, name)
        result: dict[str, Any] = {"name": name, "subscriptions": counts.subscription_count}
        if name.startswith("presence-"):
            members = await state.presence_members(app_id, name)
            result["members"] = [
                {"user_id": user_id, "user_info": info} for user_id, info in members.items()
            ][:500]
        return result

    async def _send_event(self, app: Any, request: Request, writer: asyncio.StreamWriter) -> None:
        """The form's event, as the HTTP API's ``POST /events`` body, through its own
        endpoint (validation, limits, the hub's publish): the reply is the API's."""
        try:
            form = msgspec.json.decode(request.body)
            if not isinstance(form, dict):
                raise ValueError
        except (msgspec.DecodeError, ValueError):
            self._json(writer, 400, {"error": "Expected a JSON object"})
            return
        body: dict[str, Any] = {
            "name": form.get("event"),
            "channel": form.get("channel"),
            "data": form.get("data"),
        }
        if form.get("socket_id"):
            body["socket_id"] = form["socket_id"]
        try:
            if not app.enabled:  # as the API's router refuses it, before the endpoint
                raise ApiError(403, f"App {app.id} is disabled")
            status, reply = await self.node.api.events(app, ["events"], {}, _encode(body))
        except ApiError as exc:
            status, reply = exc.status, api.error_body(exc.status, exc.message)
        except BrokerUnavailable as exc:
            status = 503
            reply = api.error_body(503, f"Not delivered to the whole cluster: {exc}")
        self._reply(writer, status, reply)

    async def _stream(self, app_id: str, request: Request, writer: asyncio.StreamWriter) -> None:
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
            f"{SECURITY_HEADERS}\r\n"
        )
        writer.write(head.encode() + b": open\n\n")
        watcher = self.taps.watch(app_id)
        broker = self.node.backend.broker
        # The console sends nothing after its request: a read that ends is the console
        # going away, noticed at once (not at the next write), so that the app stops
        # being watched (here and on the other nodes) as soon as nobody looks.
        assert request.reader is not None
        gone = asyncio.ensure_future(request.reader.read(1024))
        gone.add_done_callback(lambda _: watcher.wake.set())
        try:
            # The other nodes' rows come too (in a cluster).
            await broker.watch_rows(app_id)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wake.wait(), STREAM_PING)
                if gone.done():
                    return
                if watcher.rows:
                    await asyncio.sleep(STREAM_BATCH)
                rows, dropped = watcher.take()
                out = [b"data: " + row + b"\n\n" for row in rows]
                if dropped:
                    out.append(b"event: dropped\ndata: %d\n\n" % dropped)
                writer.write(b"".join(out) if out else b": ping\n\n")
                # Waits on this console only: the data plane never waits (the watcher's
                # queue is bounded and drops instead). A console that reads nothing for
                # 30 s is let go.
                try:
                    await asyncio.wait_for(writer.drain(), 30.0)
                except TimeoutError:
                    return
                if writer.is_closing():
                    return
        finally:
            gone.cancel()
            self.taps.unwatch(app_id, watcher)
            broker.unwatch_rows(app_id)


def _messages_sent(app_id: str) -> float:
    """Frames fan-out wrote for the app on this node (the metrics counter)."""
    from clarion import metrics

    try:
        return float(metrics.messages_sent.labels(app_id)._value.get())
    except AttributeError:  # pragma: no cover - a prometheus_client without _value
        return 0.0
