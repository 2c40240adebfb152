"""The HTTP/1.1 layer of a connection: requests until (unless) it upgrades.

httptools parses; its callbacks gather one request (target, the few headers kept, body)
and hand it to the HTTP API (:mod:`clarion.server.http_api`). Requests on one
keep-alive connection are answered in order: one that waits on the cluster state queues
the ones behind it. Limits: a head over ``MAX_HEAD_BYTES`` gets 431, a body over the
configured size 413 (refused as soon as it is announced); a socket that does not finish
its head in ``HEAD_TIMEOUT`` seconds, or stays idle between requests for
``IDLE_HTTP_TIMEOUT``, is closed by the sweep (:meth:`HttpLayer.check_http`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from clarion.protocol.api import error_body
from clarion.server import admission
from clarion.server.eager import run_eagerly
from clarion.server.http_api import Response

if TYPE_CHECKING:
    from clarion.server.context import Context

requests_log = logging.getLogger("clarion.requests")

# The connection slots this layer owns (the connection class declares them).
SLOTS = (
    "_body",
    "_body_size",
    "_busy",
    "_head_bytes",
    "_headers",
    "_in_head",
    "_keep_alive",
    "_parser",
    "_queue",
    "_request_started",
    "_upgrade",
    "_url",
)

_STATUS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# The request headers kept (the rest are only counted against the head limit); the
# lines of a repeated forwarding header are joined with commas, in order.
_UPGRADE_HEADERS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"content-length",
        b"origin",
        b"x-forwarded-for",
        b"forwarded",
    }
)
_JOINED_HEADERS = frozenset({b"x-forwarded-for", b"forwarded"})
# Requests of one connection waiting behind one that awaits the cluster state; past it
# the connection is not read until they are answered.
MAX_PENDING_REQUESTS = 100
# A request line and headers larger than this get 431; a socket that does not finish its
# head in HEAD_TIMEOUT seconds, or stays idle between requests IDLE_HTTP_TIMEOUT, is closed.
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
IDLE_HTTP_TIMEOUT = 60.0

# The start of each response head, up to the Content-Length value, by (status, keep-alive).
_HEADS: dict[tuple[int, bool], bytes] = {}

Request = tuple[str, str, str, bytes, bool]  # method, path, query, body, keep-alive


def split_target(target: bytes) -> tuple[str, str]:
    """Path (still percent-encoded, as signed) and query of a request target."""
    if not target.startswith(b"/"):
        url = httptools.parse_url(target)  # absolute form: http://host/path?query
        target = url.path + (b"?" + url.query if url.query else b"")
    path, _, query = target.partition(b"?")
    return path.decode("utf-8", "replace"), query.decode("utf-8", "replace")


class HttpLayer:
    """HTTP/1.1 requests of a connection (a mixin of the connection class)."""

    if TYPE_CHECKING:
        ctx: Context
        transport: asyncio.Transport
        peer: str
        last_seen: float
        _parser: Any
        _url: bytes
        _headers: dict[bytes, bytes]
        _body: list[bytes]
        _body_size: int
        _upgrade: bool
        _busy: bool
        _keep_alive: bool
        _in_head: bool
        _head_bytes: int
        _request_started: tuple[str, str, float] | None
        _queue: deque[Request] | None
        _closing: bool

        def _upgrade_requested(self, rest: bytes) -> None: ...
        def _abort_later(self) -> None: ...
    else:
        # Slots of its own would clash with the session's (only one base of a class may
        # have any): the connection class declares SLOTS, with the other layers'.
        __slots__ = ()

    def _http_start(self) -> None:
        self._parser = httptools.HttpRequestParser(self)

    def _http_data(self, data: bytes) -> None:
        if self._parser is None:
            return  # after a refused request: discard
        self.last_seen = time.monotonic()
        try:
            self._parser.feed_data(data)
            if self._in_head and self._parser is not None:
                # Still inside a request head after this chunk: count it (a body that
                # came with a finished head is not counted).
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._http_reply(
                        431,
                        error_body(431, f"Request head larger than {MAX_HEAD_BYTES} bytes"),
                        False,
                    )
        except httptools.HttpParserUpgrade as exc:
            if self._closing:
                return  # refused already (request head too large)
            self._upgrade_requested(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            self._http_reply(400, error_body(400, f"Malformed HTTP request: {exc}"), False)
            self._parser = None

    def check_http(self, now: float) -> None:
        """Called by the sweep: close a socket that never finishes its request head, or
        an idle keep-alive connection."""
        limit = HEAD_TIMEOUT if self._in_head else IDLE_HTTP_TIMEOUT
        if not self._busy and now - self.last_seen > limit:
            self._closing = True
            self.transport.close()

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._upgrade = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        name = name.lower()
        if name in _UPGRADE_HEADERS:
            if name in _JOINED_HEADERS and name in self._headers:
                value = self._headers[name] + b"," + value
            self._headers[name] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._upgrade = bool(self._parser.should_upgrade())
        # A body announced too large is refused now, not after waiting for its bytes.
        declared = self._headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.ctx.settings.max_body_bytes:
            self._body_too_large()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > self.ctx.settings.max_body_bytes:
            self._body_too_large()

    def _body_too_large(self) -> None:
        limit = self.ctx.settings.max_body_bytes
        self._http_reply(413, error_body(413, f"Request body larger than {limit} bytes"), False)
        self._parser = None
        raise httptools.HttpParserCallbackError("body too large")

    def on_message_complete(self) -> None:
        if self._head_bytes > MAX_HEAD_BYTES:
            limit = MAX_HEAD_BYTES
            self._http_reply(431, error_body(431, f"Request head larger than {limit} bytes"), False)
            return
        if self._upgrade:
            return  # handled when feed_data raises HttpParserUpgrade
        method = self._parser.get_method().decode()
        path, query = split_target(self._url)
        keep_alive = bool(self._parser.should_keep_alive())
        request = (method, path, query, b"".join(self._body), keep_alive)
        if self._busy:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(request)
            if len(self._queue) == MAX_PENDING_REQUESTS:
                self.transport.pause_reading()  # resumed as the queue drains
            return
        self._serve(request)

    # --- requests and responses ---------------------------------------------------------

    def _serve(self, request: Request) -> None:
        method, path, query, body, keep_alive = request
        ctx = self.ctx
        if admission.over_address_limit(ctx, self.peer):
            message = "Too many connections from your address"
            self._http_reply(503, error_body(503, message), False)
            return
        if ctx.settings.log_requests:
            self._request_started = (method, path, time.perf_counter())
        prefix = ctx.settings.path_prefix
        if method == "GET" and path.startswith(prefix + "/app/"):
            self._http_reply(
                426, error_body(426, "This is a WebSocket endpoint: upgrade required"), keep_alive
            )
            return
        self._busy = True
        self._keep_alive = keep_alive
        run_eagerly(ctx.api.handle(method, path, query, body), self._served, ctx.eager)

    def _served(self, response: Response) -> None:
        self._busy = False
        self._http_reply(response[0], response[1], self._keep_alive)
        if self._queue and not self._closing:
            if len(self._queue) == MAX_PENDING_REQUESTS:
                self.transport.resume_reading()
            self._serve(self._queue.popleft())

    def _http_reply(self, status: int, body: bytes, keep_alive: bool) -> None:
        if self._closing:
            return
        if self._request_started is not None:
            method, path, started = self._request_started
            self._request_started = None
            # The path only: the query holds the auth signature, which never goes to a log.
            requests_log.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
        head = _HEADS.get((status, keep_alive))
        if head is None:
            head = _HEADS[(status, keep_alive)] = (
                f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                + ("" if keep_alive else "Connection: close\r\n")
                + "Content-Length: "
            ).encode()
        self.transport.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        if not keep_alive:
            self._closing = True
            self._parser = None
            # A lingering close: end our side, discard what the client still sends (a body
            # we refused), and drop the socket when it closes or the grace time is over.
            # Closing at once with unread input would reset the connection and could lose
            # the reply.
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self._abort_later()
            else:
                self.transport.close()
