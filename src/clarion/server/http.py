"""The HTTP/1.1 layer of a connection: requests until (unless) it upgrades.

httptools parses; its callbacks gather one request (target, the few headers kept, body)
and hand it to the HTTP API (:mod:`clarion.server.http_api`). Requests on one
keep-alive connection are answered in order: one that waits on the cluster state queues
the ones behind it. Limits: a head over ``MAX_HEAD_BYTES`` gets 431, a body over the
configured size 413 (refused as soon as it is announced). Every timeout is absolute,
whatever trickles in: a head must be complete ``[server] head_timeout`` seconds after its
first byte (a new socket must send one within as long), a request with its body
``IDLE_HTTP_TIMEOUT`` seconds after its first byte, and a keep-alive connection is closed
``IDLE_HTTP_TIMEOUT`` seconds after its last answer; the sweep
(:meth:`HttpLayer.check_http`) closes the sockets past them. An address may have
``[server] max_unfinished_heads_per_ip`` heads in progress across reads; the next gets 429.

Head bytes are counted once: a head read in one piece by the sizes httptools reports
(the request line, each header's name and value, and their fixed framing), so that a head
of 16 KiB passes whatever the segments; and a head that goes on across reads by its raw
bytes too, since httptools reports a header only once it is complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from clarion import metrics
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
    "_head_address",
    "_head_bytes",
    "_head_raw",
    "_headers",
    "_in_head",
    "_keep_alive",
    "_parser",
    "_phase_at",
    "_queue",
    "_request_started",
    "_spare",
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
# ... and their bodies' bytes: a pipeline of large bodies behind a slow answer must not
# hold max_body_bytes times MAX_PENDING_REQUESTS.
MAX_PENDING_REQUEST_BYTES = 1024 * 1024
# A request line and headers larger than this get 431. A request (head and body) must be
# complete IDLE_HTTP_TIMEOUT seconds after its first byte, and a keep-alive connection
# send its next request within as long after an answer.
MAX_HEAD_BYTES = 16 * 1024
IDLE_HTTP_TIMEOUT = 60.0
# The bytes of a head that httptools does not report: the request line's spaces and
# version and its line end (14), and each header's ": " and line end (4).
_REQUEST_LINE_FRAMING = len(b"  HTTP/1.1\r\n\r\n")
_HEADER_FRAMING = len(b": \r\n")
# Where a connection is in a request head (HttpLayer._in_head): not in one (between
# requests, in a body), one that began in the bytes being parsed, one that goes on
# across reads (and a new socket waiting for its first request).
NO_HEAD, HEAD_BEGUN, HEAD_OPEN = 0, 1, 2

# The request state of a socket between requests and after its upgrade: shared, and
# never written (on_message_begin gives each request its own before the parser can
# write one), so that an idle or upgraded connection holds no dict or list of its own.
NO_HEADERS: dict[bytes, bytes] = {}
NO_BODY: list[bytes] = []

# The start of each response head, up to the Content-Length value, by (status, keep-alive).
_HEADS: dict[tuple[int, bool], bytes] = {}

Request = tuple[str, str, str, bytes, bool]  # method, path, query, body, keep-alive


def queue_full(queue: deque[Request]) -> bool:
    """Whether the requests waiting behind one being answered fill their bound, in number
    or in body bytes (then the socket is not read until they drain)."""
    return len(queue) >= MAX_PENDING_REQUESTS or (
        sum(len(request[3]) for request in queue) >= MAX_PENDING_REQUEST_BYTES
    )


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
        _in_head: int
        _head_bytes: int
        _head_raw: int
        _head_address: str | None
        _phase_at: float
        _spare: bool
        _request_started: tuple[str, str, float] | None
        _queue: deque[Request] | None
        _closing: bool

        def _upgrade_requested(self, rest: bytes) -> None: ...
        def _readdress_from_headers(self) -> None: ...
        def _abort_later(self) -> None: ...
        def _read_more(self) -> None: ...
    else:
        # Slots of its own would clash with the session's (only one base of a class may
        # have any): the connection class declares SLOTS, with the other layers'.
        __slots__ = ()

    def _http_start(self, now: float) -> None:
        self._parser = httptools.HttpRequestParser(self)
        # A new socket is in its first head from the start: it has head_timeout to send it.
        self._in_head = HEAD_OPEN
        self._phase_at = now

    def _http_data(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return  # after a refused request: discard
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._closing:
                return  # refused already (request head too large)
            self._upgrade_requested(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._http_reply(400, error_body(400, f"Malformed HTTP request: {exc}"), False)
            self._parser = None
            return
        if self._closing:
            return
        state = self._in_head
        if state == HEAD_BEGUN:
            # A head began in these bytes and goes on in the next read: it counts against
            # its address's unfinished heads until it is complete.
            self._in_head = HEAD_OPEN
            address = self.peer
            if admission.head_opened(self.ctx, address):
                self._head_address = address
            else:
                message = "Too many unfinished requests from your address"
                self._http_reply(429, error_body(429, message), False)
        elif state == HEAD_OPEN:
            # Every byte of these belongs to a head that began in an earlier read. httptools
            # keeps a header to itself until it is complete, so the raw bytes bound it.
            self._head_raw += len(data)
            if self._head_raw > MAX_HEAD_BYTES:
                self._head_too_large()

    def _head_too_large(self) -> None:
        message = f"Request head larger than {MAX_HEAD_BYTES} bytes"
        self._http_reply(431, error_body(431, message), False)

    def check_http(self, now: float) -> None:
        """Called by the sweep: close a socket past its head or request deadline, or an
        idle keep-alive connection (each counted from a fixed moment, see the module)."""
        if self._busy:
            return
        in_head = self._in_head
        limit = self.ctx.settings.head_timeout if in_head else IDLE_HTTP_TIMEOUT
        if now - self._phase_at > limit:
            if in_head and not self._closing:
                metrics.sockets_dropped.labels("head_timeout").inc()
            self._closing = True
            self.transport.close()

    def waiting_for_answer(self) -> bool:
        """A request of this socket is being handled (the HTTP API has not answered)."""
        return self._busy

    def evict(self) -> None:
        """Drop the socket now, to free its descriptor (see admission.spare)."""
        self._closing = True
        # Out of the watched sockets at once: the next eviction must pick another, even
        # before the transport reports the socket gone.
        self.ctx.http_connections.pop(self, None)  # type: ignore[call-overload]
        self.transport.abort()

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        # The first byte of a request: its deadlines count from now.
        self._phase_at = time.monotonic()
        self._in_head = HEAD_BEGUN
        self._head_bytes = self._head_raw = 0
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._upgrade = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + _HEADER_FRAMING
        name = name.lower()
        if name in _UPGRADE_HEADERS:
            if name in _JOINED_HEADERS and name in self._headers:
                value = self._headers[name] + b"," + value
            self._headers[name] = value

    def on_headers_complete(self) -> None:
        if self.ctx.settings.trusted_proxies:
            # The forwarding layer's: the client's address, before anything uses it.
            self._readdress_from_headers()
        self._in_head = NO_HEAD
        address = self._head_address
        if address is not None:
            self._head_address = None
            admission.head_closed(self.ctx, address)
        parser = self._parser
        if parser is None:
            return  # answered and closing already: the rest of the bytes are discarded
        if self._head_bytes + len(parser.get_method()) + _REQUEST_LINE_FRAMING > MAX_HEAD_BYTES:
            self._head_too_large()
            raise httptools.HttpParserCallbackError("request head too large")
        self._upgrade = bool(parser.should_upgrade())
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
            if queue_full(self._queue):
                self.transport.pause_reading()  # resumed as the queue drains
            return
        self._serve(request)

    # --- requests and responses ---------------------------------------------------------

    def _serve(self, request: Request) -> None:
        method, path, query, body, keep_alive = request
        ctx = self.ctx
        if ctx.settings.max_connections_per_ip and admission.over_address_limit(ctx, self.peer):
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
        # A socket in the reserved descriptors gets one answer (see admission.spare).
        self._keep_alive = keep_alive and not self._spare
        run_eagerly(ctx.api.handle(method, path, query, body), self._served, ctx.eager)

    def _served(self, response: Response) -> None:
        self._busy = False
        self._http_reply(response[0], response[1], self._keep_alive)
        queue = self._queue
        if queue and not self._closing:
            was_full = queue_full(queue)
            self._serve(queue.popleft())
            if was_full:
                self._read_more()

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
        if not self._in_head:
            # The keep-alive deadline counts from the answer (a head already begun, in a
            # pipeline, keeps its own).
            self._phase_at = time.monotonic()
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
