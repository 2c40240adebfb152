"""One asyncio Protocol per TCP connection on the single port.

Until an upgrade, httptools parses HTTP and requests go to the HTTP API. On
``GET {prefix}/app/{key}`` with a WebSocket upgrade the same object answers 101 and from
then on feeds bytes to websockets' sans-I/O frame parser, dispatching Pusher messages
to the hub. No task, coroutine or buffer is kept per idle connection.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import httptools
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side
from websockets.protocol import State as WsState
from websockets.utils import accept_key

from clarion import metrics
from clarion.apps import App, AppRegistry
from clarion.cluster.interfaces import Member, PresenceFull
from clarion.config import ServerSettings
from clarion.hub.channels import Hub
from clarion.protocol import messages, names, signing
from clarion.protocol.api import error_body
from clarion.protocol.errors import BadMessage, CloseCode, ConnectRefused
from clarion.protocol.messages import ClientMessage
from clarion.server.eager import run_eagerly
from clarion.server.http_api import HttpApi, Response

log = logging.getLogger("clarion.connection")
connections_log = logging.getLogger("clarion.connections")
requests_log = logging.getLogger("clarion.requests")

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
# The request headers kept (the rest are only counted against the head limit).
_UPGRADE_HEADERS = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version", b"content-length"}
)
_KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011}) | frozenset(
    int(code) for code in CloseCode
)
# Messages of one connection waiting behind one that awaits the cluster state; past it
# the connection is not read until they are handled.
MAX_PENDING_MESSAGES = 100
# A request line and headers larger than this get 431; a socket that does not finish its
# head in HEAD_TIMEOUT seconds, or stays idle between requests IDLE_HTTP_TIMEOUT, is closed.
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
IDLE_HTTP_TIMEOUT = 60.0

# Frame parsers of connections gone idle, ready for the next connection with frames.
_IDLE_PARSERS: list[WsProtocol] = []

# The start of each response head, up to the Content-Length value, by (status, keep-alive).
_HEADS: dict[tuple[int, bool], bytes] = {}


def _query_value(query: str, name: str) -> str | None:
    """One parameter of a query string (the first), percent-decoded if needed."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


def _split_target(target: bytes) -> tuple[str, str]:
    """Path (still percent-encoded, as signed) and query of a request target."""
    if not target.startswith(b"/"):
        url = httptools.parse_url(target)  # absolute form: http://host/path?query
        target = url.path + (b"?" + url.query if url.query else b"")
    path, _, query = target.partition(b"?")
    return path.decode("utf-8", "replace"), query.decode("utf-8", "replace")


# Seconds a closing socket may take to answer our close frame before it is dropped.
CLOSE_GRACE = 2.0


@dataclass
class Context:
    """Everything a connection needs from the server, shared by all connections."""

    settings: ServerSettings
    registry: AppRegistry
    hub: Hub
    api: HttpApi
    new_socket_id: Callable[[], str]
    connections: set[Connection] = field(default_factory=set)
    connections_per_app: dict[str, int] = field(default_factory=dict)
    # Open connections per app on the other nodes of a cluster (refreshed every second).
    connections_elsewhere: dict[str, int] = field(default_factory=dict)
    connections_per_ip: dict[str, int] = field(default_factory=dict)
    # Sockets still speaking HTTP (not upgraded): watched for head and idle timeouts.
    http_connections: set[Connection] = field(default_factory=set)
    # Leave-all tasks of closed connections still waiting on the cluster state.
    leaving: set[asyncio.Task[None]] = field(default_factory=set)
    accepting: bool = True
    # Run handlers without a task when the state answers at once (the memory adapter).
    eager: bool = True


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leaving channels failed", exc_info=task.exception())


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_busy",
        "_closing",
        "_fragments",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_keep_alive",
        "_lost",
        "_parser",
        "_pending",
        "_queue",
        "_request_started",
        "_upgrade",
        "_upgraded",
        "_url",
        "app",
        "authorized",
        "channels",
        "client_events_count",
        "client_events_window",
        "connected_at",
        "ctx",
        "last_seen",
        "peer",
        "ping_sent_at",
        "socket_id",
        "transport",
        "user",
        "ws",
    )

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser: Any = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._upgrade = False
        self._busy = False
        self._keep_alive = True
        self._in_head = True
        self._head_bytes = 0
        self._request_started: tuple[str, str, float] | None = None
        self._queue: deque[tuple[str, str, str, bytes, bool]] | None = None
        self._closing = False
        self._upgraded = False
        self._lost = False
        self._pending: deque[ClientMessage] | None = None
        self._fragments: list[bytes] | None = None
        self.ws: WsProtocol | None = None
        self.app: App | None = None
        self.socket_id = ""
        self.peer = ""  # the client's address, read once at the handshake
        self.channels: set[str] = set()
        self.last_seen = 0.0
        self.ping_sent_at = 0.0
        self.connected_at = 0.0
        self.user: messages.SignedInUser | None = None
        # Signed in, or subscribed to a channel that needed authorisation.
        self.authorized = False
        self.client_events_window = 0.0
        self.client_events_count = 0

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._parser = httptools.HttpRequestParser(self)
        ctx = self.ctx
        # Every socket counts against its address from the start, upgraded or not, so
        # that idle or half-sent requests cannot take all the descriptors either.
        self.peer = self._peer_ip()
        ctx.connections_per_ip[self.peer] = ctx.connections_per_ip.get(self.peer, 0) + 1
        self.last_seen = time.monotonic()
        ctx.http_connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self._ws_data(data)
            return
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
            self.ctx.http_connections.discard(self)
            try:
                self._accept_websocket(data[exc.args[0] :])
            except (ValueError, UnicodeDecodeError, httptools.HttpParserError) as error:
                # Bytes an unauthenticated client chose: a 400, never a traceback.
                if not self._upgraded:
                    self._http_reply(400, error_body(400, f"Bad upgrade request: {error}"), False)
                else:
                    self.close(1002, "Bad upgrade request")
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

    def _close_reason(self) -> str:
        """The close code for metrics: ours if we closed, else the client's, else abnormal."""
        ws = self.ws
        if ws is not None:
            close = ws.close_sent if ws.close_sent is not None else ws.close_rcvd
            if close is not None:
                # Bounded label values: a client may echo any code it likes.
                code = int(close.code)
                return str(code) if code in _KNOWN_CLOSE_CODES else "other"
        return "abnormal"

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._lost = True
        ctx = self.ctx
        ctx.http_connections.discard(self)
        left = ctx.connections_per_ip.get(self.peer, 1) - 1
        if left > 0:
            ctx.connections_per_ip[self.peer] = left
        else:
            ctx.connections_per_ip.pop(self.peer, None)
        if self.app is not None:
            self._leave_all()
            ctx.connections.discard(self)
            ctx.connections_per_app[self.app.id] -= 1
            reason = self._close_reason()
            metrics.connections_closed.labels(self.app.id, reason).inc()
            if ctx.settings.log_connections:
                # One line per connection, written when it ends: it says when it opened
                # (its age), from where, and how it closed.
                connections_log.info(
                    "connection closed",
                    extra={
                        "app": self.app.id,
                        "socket_id": self.socket_id,
                        "ip": self.peer,
                        "code": reason,
                        "seconds": round(time.monotonic() - self.connected_at, 3),
                    },
                )
            self.app = None
        self.ws = None
        self._parser = None

    # --- HTTP (httptools callbacks) -------------------------------------------------

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
        path, query = _split_target(self._url)
        keep_alive = bool(self._parser.should_keep_alive())
        request = (method, path, query, b"".join(self._body), keep_alive)
        if self._busy:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(request)
            if len(self._queue) == MAX_PENDING_MESSAGES:
                self.transport.pause_reading()  # resumed as the queue drains
            return
        self._serve(request)

    def _serve(self, request: tuple[str, str, str, bytes, bool]) -> None:
        method, path, query, body, keep_alive = request
        per_ip = self.ctx.settings.max_connections_per_ip
        if per_ip and self.ctx.connections_per_ip.get(self.peer, 0) > per_ip:
            message = "Too many connections from your address"
            self._http_reply(503, error_body(503, message), False)
            return
        if self.ctx.settings.log_requests:
            self._request_started = (method, path, time.perf_counter())
        prefix = self.ctx.settings.path_prefix
        if method == "GET" and path.startswith(prefix + "/app/"):
            self._http_reply(
                426, error_body(426, "This is a WebSocket endpoint: upgrade required"), keep_alive
            )
            return
        self._busy = True
        self._keep_alive = keep_alive
        run_eagerly(self.ctx.api.handle(method, path, query, body), self._served, self.ctx.eager)

    def _served(self, response: Response) -> None:
        self._busy = False
        self._http_reply(response[0], response[1], self._keep_alive)
        if self._queue and not self._closing:
            if len(self._queue) == MAX_PENDING_MESSAGES:
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
                asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)
            else:
                self.transport.close()

    # --- WebSocket handshake ----------------------------------------------------------

    def _accept_websocket(self, rest: bytes) -> None:
        headers = self._headers
        parser = self._parser
        self._parser = None
        path, query = _split_target(self._url)
        key = headers.get(b"sec-websocket-key")
        if key is not None and len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError("Sec-WebSocket-Key must be 16 bytes in base64")
        if (
            parser.get_method() != b"GET"
            or headers.get(b"upgrade", b"").lower() != b"websocket"
            or key is None
            or headers.get(b"sec-websocket-version") != b"13"
        ):
            self._http_reply(
                400, error_body(400, "Expected a WebSocket upgrade (version 13)"), False
            )
            return
        # No extensions are negotiated, so frames are never compressed.
        switching = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
        )
        self._upgraded = True
        self._headers = {}
        self._body = []
        try:
            app = self._admit(path, query)
        except ConnectRefused as refused:
            self.transport.write(switching)
            self._refuse(refused)
            return
        ctx = self.ctx
        self.app = app
        self.socket_id = ctx.new_socket_id()
        self.last_seen = self.connected_at = time.monotonic()
        ctx.connections.add(self)
        ctx.connections_per_app[app.id] = ctx.connections_per_app.get(app.id, 0) + 1
        app.opened.inc()
        # A subscriber that stops reading makes its transport call pause_writing here.
        self.transport.set_write_buffer_limits(high=ctx.settings.write_buffer_limit)
        self.transport.write(
            switching + messages.connection_established(self.socket_id, app.config.activity_timeout)
        )
        if rest:
            self._ws_data(rest)

    def _admit(self, path: str, query: str) -> App:
        """Check the connection URL in the spec's order (§2); return the app."""
        ctx = self.ctx
        prefix = ctx.settings.path_prefix + "/app/"
        app_key = path[len(prefix) :] if path.startswith(prefix) else ""
        if not app_key or "/" in app_key:
            raise ConnectRefused(CloseCode.PATH_NOT_FOUND, f"Path not found: {path}")
        protocol = _query_value(query, "protocol")
        if protocol is not None:
            if not protocol.isdigit():
                # Spec §2: a protocol that is not an integer is unsupported (4007), like
                # one outside 5..7.
                raise ConnectRefused(
                    CloseCode.UNSUPPORTED_PROTOCOL, f"Invalid protocol version: {protocol!r}"
                )
            if not 5 <= int(protocol) <= 7:
                raise ConnectRefused(
                    CloseCode.UNSUPPORTED_PROTOCOL,
                    f"Unsupported protocol version {protocol}: this server speaks 7",
                )
        app = ctx.registry.by_key(app_key)
        if app is None:
            raise ConnectRefused(CloseCode.APP_NOT_FOUND, f"App key {app_key} does not exist.")
        if not app.enabled:
            raise ConnectRefused(CloseCode.APP_DISABLED, "Application disabled")
        limit = app.config.max_connections
        if limit is not None and (
            ctx.connections_per_app.get(app.id, 0) + ctx.connections_elsewhere.get(app.id, 0)
            >= limit
        ):
            raise ConnectRefused(
                CloseCode.OVER_CONNECTION_QUOTA, "Application is over connection quota"
            )
        if not ctx.accepting:
            raise ConnectRefused(CloseCode.RECONNECT, "Server is shutting down; reconnect")
        per_ip = ctx.settings.max_connections_per_ip
        # This socket is already counted (since connection_made).
        if per_ip and ctx.connections_per_ip.get(self.peer, 0) > per_ip:
            # 41xx: pusher-js waits a second before trying again, so a reconnect loop
            # cannot spin; the cap itself keeps descriptors for everyone else.
            raise ConnectRefused(
                CloseCode.OVER_CAPACITY, "Over capacity: too many connections from your address"
            )
        return app

    def _peer_ip(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    def _refuse(self, refused: ConnectRefused) -> None:
        metrics.connections_refused.labels(str(int(refused.code))).inc()
        self.transport.write(messages.error(int(refused.code), refused.message))
        self.close(int(refused.code), refused.message)

    # --- WebSocket frames -----------------------------------------------------------

    def _parser_for_frames(self) -> WsProtocol:
        """websockets' sans-I/O parser, taken when frames arrive (see _ws_data)."""
        ws = self.ws
        if ws is None:
            ws = self.ws = (
                _IDLE_PARSERS.pop()
                if _IDLE_PARSERS
                else WsProtocol(
                    Side.SERVER, state=WsState.OPEN, max_size=self.ctx.settings.max_frame_bytes
                )
            )
        return ws

    def _ws_data(self, data: bytes) -> None:
        ws = self._parser_for_frames()
        self.last_seen = time.monotonic()
        self.ping_sent_at = 0.0
        ws.receive_data(data)
        for frame in ws.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT:
                if frame.fin:
                    self._on_text(bytes(frame.data))
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    payload = b"".join(self._fragments)
                    self._fragments = None
                    self._on_text(payload)
            elif opcode is Opcode.BINARY and not frame.fin:
                self._fragments = None
            # Binary frames are not part of the protocol and are ignored (spec §1);
            # pings are answered and close frames echoed by the parser itself.
            if self._closing:
                break
        self._flush_ws()
        # Idle at a frame boundary: drop the parser. A connection spends nearly all its
        # life waiting, and the parser (a suspended generator holding the last frame) is
        # half of its memory; a new one costs a few microseconds when the next frame
        # comes. (This reads websockets internals; the version is pinned and tested.)
        if (
            not self._closing
            and ws is self.ws
            and ws.state is WsState.OPEN
            and ws.current_size is None
            and not ws.reader.buffer
            and self._fragments is None
        ):
            self.ws = None
            # Clean (open, nothing buffered, nothing queued): another connection may reuse
            # it, which spares building one (a few microseconds) per burst of frames.
            if len(_IDLE_PARSERS) < 256:
                _IDLE_PARSERS.append(ws)

    def _flush_ws(self) -> None:
        ws = self.ws
        if ws is None:
            return
        for chunk in ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                # The parser is done (close handshake finished or protocol error).
                self._closing = True
                self.transport.close()
                return
        if ws.state is WsState.CLOSED:
            self.transport.close()

    def _on_text(self, payload: bytes) -> None:
        if self._closing or self.app is None:
            return
        received = self.app.received
        received[0].inc()
        received[1].inc(len(payload))
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self.close(1007, "Invalid UTF-8 in text frame")
            return
        try:
            message = messages.parse_client_frame(text)
        except BadMessage as exc:
            self.transport.write(messages.error(None, str(exc)))
            return
        if message.event == "pusher:ping":
            # Answered at once, even behind messages waiting on the cluster state (spec §5).
            self.transport.write(messages.PONG)
            return
        if self._pending is not None:
            # An earlier message still waits on the cluster state: keep the order, and
            # stop reading from a client that sends faster than the state answers.
            self._pending.append(message)
            if len(self._pending) == MAX_PENDING_MESSAGES:
                self.transport.pause_reading()
            return
        self._handle(message)

    def _handle(self, message: ClientMessage) -> None:
        try:
            task = run_eagerly(self._dispatch(message), eager=self.ctx.eager)
        except BadMessage as exc:
            self.transport.write(messages.error(None, str(exc)))
            return
        if task is not None:
            self._pending = deque()
            task.add_done_callback(self._resume_messages)

    def _resume_messages(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, BadMessage):
                self.transport.write(messages.error(None, str(exc)))
            else:
                log.error("message handling failed for %s", self.socket_id, exc_info=exc)
        queued, self._pending = self._pending, None
        was_full = queued is not None and len(queued) >= MAX_PENDING_MESSAGES
        while queued and self._pending is None and not self._closing:
            self._handle(queued.popleft())
        if queued and self._pending is not None:
            self._pending.extendleft(reversed(queued))
        if (
            was_full
            and not self._closing
            and (self._pending is None or len(self._pending) < MAX_PENDING_MESSAGES)
        ):
            self.transport.resume_reading()

    async def _dispatch(self, message: ClientMessage) -> None:
        name = message.event
        if name == "pusher:pong":
            pass
        elif name == "pusher:subscribe":
            await self._subscribe(messages.protocol_data(message))
        elif name == "pusher:unsubscribe":
            channel = messages.protocol_data(message).get("channel")
            if isinstance(channel, str) and channel in self.channels:
                self.channels.discard(channel)
                assert self.app is not None
                await self.ctx.hub.unsubscribe(self.app.id, self, channel)
        elif name == "pusher:signin":
            await self._signin(messages.protocol_data(message))
        elif name.startswith("pusher:"):
            pass  # unknown protocol events are ignored (spec §1)
        elif name.startswith("client-"):
            self._client_event(message)
        else:
            raise BadMessage(f"Unsupported event {name!r} from a client")

    async def _subscribe(self, data: dict[str, Any]) -> None:
        app = self.app
        assert app is not None
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise BadMessage("Missing parameter: data.channel")
        problem = names.channel_name_error(channel, names.MAX_CHANNEL_NAME_SUBSCRIBE)
        if problem:
            self._subscription_error(channel, "InvalidChannel", problem, 400)
            return
        limit = app.config.max_channels_per_connection
        if len(self.channels) >= limit and channel not in self.channels:
            self._subscription_error(
                channel, "LimitReached", f"A connection may subscribe to {limit} channels", 4100
            )
            return
        kind = names.channel_kind(channel)
        member: Member | None = None
        if kind is names.ChannelKind.PRIVATE or kind is names.ChannelKind.ENCRYPTED:
            if not self._channel_auth_ok(channel, data.get("auth")):
                return
        elif kind is names.ChannelKind.PRESENCE:
            member = self._presence_member(channel, data)
            if member is None:
                return
        elif kind is names.ChannelKind.SERVER_TO_USER:
            user_id = channel[len(names.SERVER_TO_USER_PREFIX) :]
            if self.user is None or self.user.id != user_id:
                self._subscription_error(
                    channel, "AuthError", "Sign in as this user before subscribing", 401
                )
                return
        try:
            joined = await self.ctx.hub.subscribe(app.id, self, channel, member)
        except PresenceFull:
            self._subscription_error(
                channel,
                "LimitReached",
                f"Presence channel is full ({self.ctx.hub.presence_limit(app.id)} members)",
                4100,
            )
            return
        if self._closing:
            # The socket went while the cluster state answered: undo the join.
            if joined.new:
                await self.ctx.hub.unsubscribe(app.id, self, channel)
            return
        if joined.new:
            self.channels.add(channel)
        if kind is not names.ChannelKind.PUBLIC:
            self.authorized = True
        for frame in joined.frames:
            self.transport.write(frame)

    def _presence_member(self, channel: str, data: dict[str, Any]) -> Member | None:
        app = self.app
        assert app is not None
        channel_data = data.get("channel_data")
        if channel_data is None and self.user is not None:
            # A signed-in pusher-js (>= 7.4) may omit channel_data: the member is the
            # signed-in user, and the signature covers socket_id:channel only (spec §8).
            if not self._channel_auth_ok(channel, data.get("auth")):
                return None
            return self._checked_member(channel, self.user.id, self.user.user_info)
        if not isinstance(channel_data, str):
            self._subscription_error(
                channel,
                "AuthError",
                "Missing channel_data for a presence channel (or sign in first)",
                401,
            )
            return None
        problem = signing.check_auth_token(
            data.get("auth"),
            app.credentials,
            signing.channel_auth_string(self.socket_id, channel, channel_data),
        )
        if problem:
            self._subscription_error(channel, "AuthError", problem, 401)
            return None
        try:
            parsed = messages.parse_channel_data(channel_data)
        except BadMessage as exc:
            self._subscription_error(channel, "AuthError", str(exc), 400)
            return None
        user_id, user_info = parsed
        return self._checked_member(channel, user_id, user_info)

    def _channel_auth_ok(self, channel: str, auth: object) -> bool:
        """``auth`` signs ``socket_id:channel``; if not, the subscription_error is sent."""
        assert self.app is not None
        problem = signing.check_auth_token(
            auth, self.app.credentials, signing.channel_auth_string(self.socket_id, channel)
        )
        if problem:
            self._subscription_error(channel, "AuthError", problem, 401)
        return problem is None

    def _checked_member(self, channel: str, user_id: str, user_info: Any) -> Member | None:
        """The presence limits (spec §8), whether the member came from channel_data or
        from the sign-in."""
        if len(user_id) > names.MAX_PRESENCE_USER_ID:
            self._subscription_error(
                channel,
                "LimitReached",
                f"user_id is longer than {names.MAX_PRESENCE_USER_ID} characters",
                413,
            )
            return None
        if len(messages.encode_json(user_info)) > names.MAX_PRESENCE_USER_INFO_BYTES:
            self._subscription_error(
                channel,
                "LimitReached",
                f"user_info is larger than {names.MAX_PRESENCE_USER_INFO_BYTES} bytes",
                413,
            )
            return None
        return Member(user_id, user_info)

    async def _signin(self, data: dict[str, Any]) -> None:
        app = self.app
        assert app is not None
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            self.close_with_error(CloseCode.UNAUTHORIZED, "Invalid signin: missing user_data")
            return
        problem = signing.check_auth_token(
            data.get("auth"), app.credentials, signing.user_auth_string(self.socket_id, user_data)
        )
        if problem:
            self.close_with_error(CloseCode.UNAUTHORIZED, problem)
            return
        try:
            user = messages.parse_user_data(user_data)
        except BadMessage as exc:
            self.close_with_error(CloseCode.UNAUTHORIZED, f"Invalid signin: {exc}")
            return
        hub = self.ctx.hub
        if self.user is not None:
            previous, self.user = self.user, None
            await hub.sign_out(app.id, self, previous.id)
        watchlist = user.watchlist if app.config.watchlist_events else []
        watchlist_frame = await hub.sign_in(app.id, self, user.id, watchlist)
        if self._closing:
            # The socket went while the cluster state answered: connection_lost did not
            # see this user yet, so the sign-in is undone here.
            await hub.sign_out(app.id, self, user.id)
            return
        self.user = user
        self.authorized = True
        self.transport.write(messages.signin_success(user_data))
        if watchlist_frame is not None:
            self.transport.write(watchlist_frame)

    def _client_event(self, message: ClientMessage) -> None:
        """Rules of spec §12, in order; every refusal is a pusher:error, never a close."""
        app = self.app
        assert app is not None
        channel = message.channel
        if not app.config.client_events:
            raise BadMessage(
                "To send client events, you must enable this feature in the Settings page "
                "of your dashboard."
            )
        if channel is None:
            raise BadMessage("Client events need a channel")
        kind = names.channel_kind(channel)
        if kind is not names.ChannelKind.PRIVATE and kind is not names.ChannelKind.PRESENCE:
            raise BadMessage(
                f"Client events are only allowed on private and presence channels, not {channel}"
            )
        if channel not in self.channels:
            raise BadMessage(f"Subscribe to {channel} before sending client events on it")
        if len(message.event) > names.MAX_EVENT_NAME:
            raise BadMessage(f"Client event name is longer than {names.MAX_EVENT_NAME} characters")
        now = time.monotonic()
        if now - self.client_events_window >= 1.0:
            self.client_events_window = now
            self.client_events_count = 0
        self.client_events_count += 1
        if self.client_events_count > app.config.client_event_rate_limit:
            self.transport.write(
                messages.error(
                    int(CloseCode.CLIENT_EVENT_RATE_LIMIT),
                    "Client event rejected due to rate limit",
                )
            )
            return
        user_id = None
        if kind is names.ChannelKind.PRESENCE:
            user_id = self.ctx.hub.presence_user_of(app.id, self, channel)
        frame = messages.client_event(message.event, channel, message.data, user_id)
        # The frame is bigger than its data, so only a big frame needs the exact size.
        if len(frame) > names.MAX_EVENT_DATA_BYTES:
            size = len(messages.encode_json(message.data))
            if size > names.MAX_EVENT_DATA_BYTES:
                raise BadMessage(
                    f"Client event data is larger than {names.MAX_EVENT_DATA_BYTES} bytes"
                )
        self.ctx.hub.client_event(
            app.id, self, channel, frame, message.event, message.data, user_id
        )

    def _subscription_error(self, channel: str, type_: str, message: str, status: int) -> None:
        self.transport.write(messages.subscription_error(channel, type_, message, status))

    def _leave_all(self) -> None:
        """Leave every channel and sign out (on close): in the background if it must wait."""
        app = self.app
        if app is None:
            return
        channels, self.channels = self.channels, set()
        user, self.user = self.user, None
        if channels or user is not None:
            task = run_eagerly(self._leave(app.id, channels, user), eager=self.ctx.eager)
            if task is not None:
                # Tracked so that a shutdown waits for it before the webhooks are flushed.
                leaving = self.ctx.leaving
                leaving.add(task)
                task.add_done_callback(leaving.discard)
                task.add_done_callback(_log_failure)

    async def _leave(
        self, app_id: str, channels: set[str], user: messages.SignedInUser | None
    ) -> None:
        hub = self.ctx.hub
        for channel in channels:
            await hub.unsubscribe(app_id, self, channel)
        if user is not None:
            await hub.sign_out(app_id, self, user.id)

    # --- closing ----------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake with ``code``; drop the socket if it does not answer."""
        if self._closing:
            return
        self._closing = True
        self._leave_all()
        ws = self._parser_for_frames() if self._upgraded else None
        if ws is not None and ws.state is WsState.OPEN:
            ws.send_close(code, reason[:120])
            for chunk in ws.data_to_send():
                if chunk:
                    self.transport.write(chunk)
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def disconnect(self, code: int, message: str) -> None:
        self.close_with_error(code, message)

    def close_with_error(self, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code``, then close with the same code (spec §18)."""
        if self._closing:
            return
        self.transport.write(messages.error(int(code), message))
        self.close(int(code), message)

    def pause_writing(self) -> None:
        # Called by the transport from inside a write, possibly in the middle of a
        # fan-out loop: close after it, not while the channel is being iterated.
        if self._upgraded and not self._closing:
            asyncio.get_running_loop().call_soon(self.overflowed)

    def resume_writing(self) -> None:
        pass

    def overflowed(self) -> None:
        """The subscriber stopped reading: stop writing to it and close with 4100."""
        if self._closing:
            return
        log.info("closing slow subscriber %s (write buffer over the bound)", self.socket_id)
        if self.app is not None:
            metrics.slow_consumers.labels(self.app.id).inc()
        self.close(int(CloseCode.OVER_CAPACITY), "Over capacity: the client is not reading")
        # Whatever is queued may never drain; flush what can be sent, then give up.
        self.transport.close()

    def check_activity(self, now: float, pong_timeout: float) -> None:
        """Called about once a second: ping a quiet client, close one that never answers."""
        if self._closing or self.app is None:
            return
        deadline = self.app.config.user_authentication_timeout
        if deadline is not None and not self.authorized and now - self.connected_at > deadline:
            self.close_with_error(
                CloseCode.UNAUTHORIZED, "Connection not authorized within timeout."
            )
        elif self.ping_sent_at:
            if now - self.ping_sent_at > pong_timeout:
                self.close_with_error(CloseCode.PONG_TIMEOUT, "Pong reply not received")
        elif now - self.last_seen >= self.app.config.activity_timeout:
            self.transport.write(messages.PING)
            self.ping_sent_at = now
