"""One asyncio Protocol per TCP connection on the single port, composed of its layers.

Until an upgrade, the HTTP layer (:mod:`clarion.server.http`) parses requests for the
HTTP API. On ``GET {prefix}/app/{key}`` with a WebSocket upgrade, the admission
(:mod:`clarion.server.admission`) decides, the WebSocket layer
(:mod:`clarion.server.websocket`) answers 101 and from then on turns bytes into text
messages, and the Pusher session (:mod:`clarion.protocol.session`, whose state is part of
this object) decides what each message calls for. This class carries the decisions out
against the hub, and owns what spans the layers: opening, closing, the order of
messages waiting on the cluster state, and the read budget below. The client's address
(a PROXY header, a trusted proxy's forwarding headers) is the forwarding layer's
(:mod:`clarion.server.forwarding`). Nothing a client sends escapes a handler: a
failure is answered (``pusher:error``, or an HTTP error) and logged once a minute per
kind. No task, coroutine or buffer is kept per idle connection.

Fairness: one turn of the event loop hands the parsers at most ``READ_BUDGET`` bytes of
one connection. A read bigger than that is split: the connection stops being read, the
rest is parsed a budget at a time on later turns (every other connection, and the
accept, get theirs in between), and reading resumes once it is done. Whatever may not
be parsed yet (too many messages or requests waiting on the cluster state) stops the
reading too. A client's ``pusher:ping`` is answered at most ``PONG_RATE`` times a second
(with a burst of as many); pusher-js's own ping, byte for byte, is recognised without
parsing its JSON.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import httptools

from clarion import metrics
from clarion.admin import taps
from clarion.apps import App
from clarion.cluster.interfaces import Member, PresenceFull
from clarion.logs import OncePerInterval
from clarion.protocol import messages, proxy
from clarion.protocol.api import error_body
from clarion.protocol.errors import BadMessage, ConnectRefused
from clarion.protocol.messages import ClientMessage, SignedInUser
from clarion.protocol.session import (
    PONG,
    ClientEvent,
    Decision,
    Join,
    Leave,
    Reply,
    Session,
    SignIn,
)
from clarion.server import admission, forwarding, http, websocket
from clarion.server.context import Context
from clarion.server.eager import run_eagerly
from clarion.server.forwarding import ForwardingLayer
from clarion.server.http import split_target
from clarion.server.websocket import WebSocketLayer, switching_protocols

__all__ = ["CLOSE_GRACE", "MAX_PENDING_BYTES", "MAX_PENDING_MESSAGES", "READ_BUDGET", "Connection"]

log = logging.getLogger("clarion.connection")
connections_log = logging.getLogger("clarion.connections")
# The answer to a message whose handling failed (the connection stays open).
CANNOT_HANDLE = messages.error(None, "The server could not handle this message")
# Kinds of failure logged by event name (any other name is the client's choice).
_KNOWN_EVENTS = frozenset({"pusher:subscribe", "pusher:unsubscribe", "pusher:signin"})
# Failures a client can cause at will: one line per kind a minute, never one per frame.
client_input_log = OncePerInterval(log)

# Messages of one connection waiting behind one that awaits the cluster state, and their
# bytes; past either the connection is not read until they are handled.
MAX_PENDING_MESSAGES = 100
MAX_PENDING_BYTES = 64 * 1024
# Bytes of one connection parsed per turn of the event loop (see the module docstring).
READ_BUDGET = 4 * 1024
# pusher:pong answers per second (and at once) at most; more pings are not answered.
PONG_RATE = 10
_PONG_SPACING = 1.0 / PONG_RATE
# PONG_RATE spacings make a second; half a spacing more absorbs the rounding of the sums.
_PONG_WINDOW = 1.0 + _PONG_SPACING / 2
# pusher-js's ping as it sends it.
_PING = b'{"event":"pusher:ping","data":{}}'
# Held input of a connection read no more (see Connection._stop_reading).
_STOPPED = memoryview(b"")
# Seconds a closing socket may take to answer our close frame (or, for HTTP, to close
# after our reply) before it is dropped.
CLOSE_GRACE = 2.0


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leaving channels failed", exc_info=task.exception())


class Connection(ForwardingLayer, WebSocketLayer, Session[App], asyncio.Protocol):
    # The session's slots come with Session; the layers' are declared here, with these.
    __slots__ = (
        *http.SLOTS,
        *forwarding.SLOTS,
        *websocket.SLOTS,
        "_closing",
        "_held",
        "_lost",
        "_pending",
        "_pending_bytes",
        "_pong_due",
        "_upgraded",
        "ctx",
        "peer",
        "transport",
    )

    def __init__(self, ctx: Context) -> None:
        Session.__init__(self)
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = ""  # the client's address (see clarion.protocol.proxy)
        self._via = ""  # the address the socket comes from: its peer's, or a PROXY header's
        self._proxy: tuple[proxy.HeaderReader, float] | None = None  # awaited PROXY header
        self._closing = False
        self._upgraded = False
        self._lost = False
        # Messages waiting on the cluster state, each with its size, and their bytes.
        self._pending: deque[tuple[ClientMessage, int]] | None = None
        self._pending_bytes = 0
        # Bytes read but not parsed yet (over the turn's budget).
        self._held: memoryview | None = None
        # When the pong allowance is back to full (the pongs are spaced _PONG_SPACING).
        self._pong_due = 0.0
        # HTTP layer
        self._parser = None
        self._url = b""
        self._headers = http.NO_HEADERS
        self._body = http.NO_BODY
        self._body_size = 0
        self._upgrade = False
        self._busy = False
        self._keep_alive = True
        self._in_head = http.HEAD_OPEN
        self._phase_at = 0.0
        self._head_bytes = 0
        self._head_raw = 0
        self._head_address = None
        self._spare = False
        self._request_started = None
        self._queue = None
        # WebSocket layer
        self.ws = None
        self._fragments = None
        self._allowance = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        now = time.monotonic()
        self._http_start(now)
        self.peer = self._via = admission.socket_opened(ctx, transport)
        files = ctx.files
        # spare() decides only near the reserved descriptors: far from them, no call.
        self._spare = files.sockets + files.others > files.reserved_from and admission.spare(ctx)
        ctx.http_connections[self] = None
        if ctx.settings.proxy_protocol:  # (else the forwarding layer has nothing to start)
            self._forwarding_start(now)

    def data_received(self, data: bytes) -> None:
        if self._held is not None:
            # Read while bytes were held (reading resumed by something else): they go
            # after them. Nothing is kept once reading has stopped for good.
            if self._held is not _STOPPED:
                self._held = memoryview(bytes(self._held) + data)
            return
        if len(data) > READ_BUDGET:
            # More than one turn's worth: the rest waits for later turns, unread.
            view = memoryview(data)
            self._held = view[READ_BUDGET:]
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._feed_held)
            data = view[:READ_BUDGET]  # type: ignore[assignment]
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Hand one turn's worth of input to the layer that reads it."""
        try:
            if self._upgraded:
                self._ws_data(data)
            elif self._proxy is not None:
                self._proxy_data(data)
            else:
                self._http_data(data)
        except Exception as exc:  # nothing from the client escapes a handler
            # A bug met by client input: logged once per kind and interval (never a
            # traceback per frame), and the connection ends cleanly.
            self._input_failed(exc, "read")
            if self._upgraded:
                self.close(1011, "Internal error")
            else:
                self._http_reply(500, error_body(500, "Internal server error"), False)

    def _input_failed(self, exc: Exception, where: str) -> None:
        client_input_log.log(
            logging.ERROR,
            f"{where}:{type(exc).__name__}",
            "handling client input failed (%s); similar failures are logged once a minute",
            where,
            exc_info=exc,
        )

    def _feed_held(self) -> None:
        """Parse the next budget of held bytes (one call per turn)."""
        held = self._held
        if held is None or held is _STOPPED or self._lost or not self._may_read():
            return  # _read_more calls again once the reason is gone
        if len(held) > READ_BUDGET:
            self._held = held[READ_BUDGET:]
            held = held[:READ_BUDGET]
            asyncio.get_running_loop().call_soon(self._feed_held)
        else:
            self._held = None
        self._feed(held)  # type: ignore[arg-type]
        if self._held is None and not self._lost and self._may_read():
            self.transport.resume_reading()

    def _may_read(self) -> bool:
        """Whether more input may be parsed now: reading has not stopped for good, and
        the messages or requests waiting on the cluster state are under their bounds."""
        if self._held is _STOPPED:
            return False
        pending = self._pending
        if pending is not None and (
            len(pending) >= MAX_PENDING_MESSAGES or self._pending_bytes >= MAX_PENDING_BYTES
        ):
            return False
        queue = self._queue
        return queue is None or not http.queue_full(queue)

    def _read_more(self) -> None:
        """What stopped the parsing is gone: go on with held bytes, or read again."""
        if self._lost or not self._may_read():
            return
        if self._held is not None:
            asyncio.get_running_loop().call_soon(self._feed_held)
        else:
            self.transport.resume_reading()

    def _stop_reading(self) -> None:
        """Read and parse nothing more from this socket (it is being closed)."""
        self._held = _STOPPED
        if not self._lost:
            # Not write_eof: a fan-out may still write to the socket until it is gone.
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._lost = True
        ctx = self.ctx
        ctx.http_connections.pop(self, None)
        admission.socket_closed(ctx, self.peer)
        address = self._head_address
        if address is not None:
            self._head_address = None
            admission.head_closed(ctx, address)
        app = self.app
        if app is not None:
            self._leave_all()
            admission.closed(ctx, self, app)
            reason = self._close_reason()
            taps.connection_closed(ctx.hub.taps, app.id, self.socket_id, reason)
            metrics.connections_closed.labels(app.id, reason).inc()
            if ctx.settings.log_connections:
                # One line per connection, written when it ends: it says when it opened
                # (its age), from where, and how it closed.
                connections_log.info(
                    "connection closed",
                    extra={
                        "app": app.id,
                        "socket_id": self.socket_id,
                        "ip": self.peer,
                        "code": reason,
                        "seconds": round(time.monotonic() - self.connected_at, 3),
                    },
                )
            self.app = None
        self.ws = None
        self._parser = None

    # --- the upgrade ------------------------------------------------------------------

    def _upgrade_requested(self, rest: bytes) -> None:
        """The HTTP layer saw a complete upgrade request; ``rest`` came after its head."""
        self.ctx.http_connections.pop(self, None)
        try:
            self._accept_websocket(rest)
        except (ValueError, UnicodeDecodeError, httptools.HttpParserError) as error:
            # Bytes an unauthenticated client chose: a 400, never a traceback.
            if not self._upgraded:
                self._http_reply(400, error_body(400, f"Bad upgrade request: {error}"), False)
            else:
                self.close(1002, "Bad upgrade request")

    def _accept_websocket(self, rest: bytes) -> None:
        parser = self._parser
        self._parser = None
        path, query = split_target(self._url)
        switching = switching_protocols(parser.get_method(), self._headers)
        if switching is None:
            self._http_reply(
                400, error_body(400, "Expected a WebSocket upgrade (version 13)"), False
            )
            return
        self._upgraded = True
        origin = self._headers.get(b"origin")
        # Nothing of the request is kept by a WebSocket connection (its deadlines are the
        # session's from now on).
        self._phase_at = 0.0
        self._url = b""
        self._headers = http.NO_HEADERS
        self._body = http.NO_BODY
        ctx = self.ctx
        try:
            app = admission.admit(
                ctx,
                path,
                query,
                self.peer,
                origin.decode("latin-1") if origin else None,
                spare=self._spare,
            )
        except ConnectRefused as refused:
            self.transport.write(switching)
            admission.refused(refused)
            taps.connection_refused(
                ctx.hub.taps,
                ctx.registry.by_key,
                path,
                refused,
                origin.decode("latin-1") if origin else None,
            )
            self.close_with_error(refused.code, refused.message)
            return
        established = self.start(app, ctx.new_socket_id(), time.monotonic())
        self._allowance = self._message_burst()
        admission.opened(ctx, self, app)
        hub_taps = ctx.hub.taps
        if app.id in hub_taps.apps:  # (nothing to tell while no console watches the app)
            taps.connection_opened(hub_taps, app.id, self.socket_id, self.peer)
        # A subscriber that stops reading makes its transport call pause_writing here.
        self.transport.set_write_buffer_limits(high=ctx.settings.write_buffer_limit)
        self.transport.write(switching + established)
        if rest:
            self._ws_data(rest)

    # --- Pusher messages ----------------------------------------------------------------

    def _on_text(self, payload: bytes) -> None:
        app = self.app
        if self._closing or app is None:
            return
        if payload == _PING:
            self._pong()
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self.close(1007, "Invalid UTF-8 in text frame")
            return
        try:
            message = messages.parse_client_frame(text)
        except BadMessage as exc:
            self.send(messages.error(None, str(exc)))
            return
        except Exception as exc:  # nothing from the client escapes a handler
            self._input_failed(exc, "parse")
            self.send(messages.error(None, "Invalid message"))
            return
        if message.event == "pusher:ping":
            self._pong()
            return
        pending = self._pending
        if pending is not None:
            # An earlier message still waits on the cluster state: keep the order, and
            # stop reading from a client that sends faster than the state answers.
            pending.append((message, len(payload)))
            self._pending_bytes += len(payload)
            if not self._may_read():
                self.transport.pause_reading()
            return
        self._handle(message)

    def _handle(self, message: ClientMessage) -> None:
        """Decide and carry out one message; a failure answers this message only: the
        connection stays open (docs/protocol.md: a bad message is a pusher:error)."""
        try:
            self._carry_out(self.receive(message))
        except Exception as exc:  # nothing from the client escapes a handler
            event = message.event
            self._input_failed(exc, event if event in _KNOWN_EVENTS else "message")
            self._cannot_handle()

    def _cannot_handle(self) -> None:
        if not self._closing:
            self.send(CANNOT_HANDLE)

    def _pong(self) -> None:
        """The session's answer to a ping (PONG), sent at once, even behind messages
        waiting on the cluster state, unless the client pings faster than PONG_RATE."""
        now = self.last_seen  # when these bytes came
        due = self._pong_due
        due = (due if due > now else now) + _PONG_SPACING
        if due - now < _PONG_WINDOW:
            self._pong_due = due
            self.send(PONG.frame)

    def _carry_out(self, decision: Decision | None) -> None:
        """Do what the session decided about a message."""
        if isinstance(decision, Reply):
            self.send(decision.frame)
            taps.reply_sent(self.ctx.hub.taps, self.app, self.socket_id, decision.frame)
            return
        if isinstance(decision, ClientEvent):
            self._forward(decision)
            return
        if decision is None:
            return
        task: asyncio.Task[Any] | None
        if isinstance(decision, Join):
            task = run_eagerly(self._join(decision), eager=self.ctx.eager)
        elif isinstance(decision, Leave):
            app = self.app
            assert app is not None
            task = run_eagerly(
                self.ctx.hub.unsubscribe(app.id, self, decision.channel), eager=self.ctx.eager
            )
        elif isinstance(decision, SignIn):
            task = run_eagerly(self._sign_in(decision), eager=self.ctx.eager)
        else:
            self.close_with_error(decision.code, decision.message)
            return
        if task is not None:
            self._pending = deque()
            self._pending_bytes = 0
            task.add_done_callback(self._resume_messages)

    def _resume_messages(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            failure = task.exception()
            if isinstance(failure, Exception):
                self._input_failed(failure, "cluster")
                self._cannot_handle()
        queued, self._pending = self._pending, None
        was_full = queued is not None and (
            len(queued) >= MAX_PENDING_MESSAGES or self._pending_bytes >= MAX_PENDING_BYTES
        )
        self._pending_bytes = 0
        while queued and self._pending is None and not self._closing:
            self._handle(queued.popleft()[0])
        if queued and self._pending is not None:
            # Another message waits on the state now: those behind it keep their place.
            self._pending.extendleft(reversed(queued))
            self._pending_bytes += sum(size for _, size in queued)
        if was_full and not self._closing:
            self._read_more()

    async def _join(self, join: Join) -> None:
        app = self.app
        assert app is not None
        hub = self.ctx.hub
        member = Member(join.user_id, join.user_info) if join.user_id is not None else None
        try:
            joined = await hub.subscribe(app.id, self, join.channel, member)
        except PresenceFull:
            self.send(self.presence_full(join.channel, hub.presence_limit(app.id)))
            return
        if self._closing:
            # The socket went while the cluster state answered: undo the join.
            if joined.new:
                await hub.unsubscribe(app.id, self, join.channel)
            return
        for frame in self.subscribed(join, joined):
            self.send(frame)

    async def _sign_in(self, signin: SignIn) -> None:
        app = self.app
        assert app is not None
        hub = self.ctx.hub
        if signin.previous is not None:
            await hub.sign_out(app.id, self, signin.previous.id)
        watchlist_frame = await hub.sign_in(app.id, self, signin.user.id, signin.watchlist)
        if self._closing:
            # The socket went while the cluster state answered: connection_lost did not
            # see this user yet, so the sign-in is undone here.
            await hub.sign_out(app.id, self, signin.user.id)
            return
        for frame in self.signed_in(signin, watchlist_frame):
            self.send(frame)

    def _forward(self, event: ClientEvent) -> None:
        app = self.app
        assert app is not None
        hub = self.ctx.hub
        channel = event.channel
        user_id = hub.presence_user_of(app.id, self, channel) if event.presence else None
        frame = self.client_event_frame(event, user_id)
        if isinstance(frame, Reply):
            self.send(frame.frame)
            return
        hub.client_event(app.id, self, channel, frame, event.event, event.data, user_id)

    def _leave_all(self) -> None:
        """Leave every channel and sign out (on close): in the background if it must wait."""
        app = self.app
        if app is None:
            return
        channels, user = self.ended()
        if channels or user is not None:
            task = run_eagerly(self._leave(app.id, channels, user), eager=self.ctx.eager)
            if task is not None:
                # Tracked so that a shutdown waits for it before the webhooks are flushed.
                leaving = self.ctx.leaving
                leaving.add(task)
                task.add_done_callback(leaving.discard)
                task.add_done_callback(_log_failure)

    async def _leave(
        self, app_id: str, channels: Iterable[str], user: SignedInUser | None
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
        self._send_close(code, reason)
        self._abort_later()

    def _abort_later(self) -> None:
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def disconnect(self, code: int, message: str) -> None:
        self.close_with_error(code, message)

    def close_with_error(self, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code``, then close with the same code
        (docs/protocol.md §18)."""
        if self._closing:
            return
        taps.closed_with_error(self.ctx.hub.taps, self.app, self.socket_id, int(code), message)
        self.send(messages.error(int(code), message))
        self.close(int(code), message)

    def check_activity(self, now: float, pong_timeout: float) -> None:
        """Called about once a second: ping a quiet client, close one that never answers."""
        if self._closing or self.app is None:
            return
        decision = self.activity(now, pong_timeout)
        if decision is None:
            return
        if isinstance(decision, Reply):
            self.send(decision.frame)
        else:
            self.close_with_error(decision.code, decision.message)
