"""The WebSocket layer of a connection: the upgrade's 101, frames in and out, the close.

Frames are parsed by websockets' sans-I/O protocol object, taken from a pool when bytes
arrive and given back at a frame boundary, so that an idle connection holds no parser.
Text messages (reassembled from fragments) go to the connection's ``_on_text``; pings
are answered and close frames echoed by the parser itself. Server frames are written
as they are: they are built complete by :mod:`clarion.protocol.messages`.

Every frame a client sends (of any kind) draws on its allowance: ``[server]
max_messages_per_second``, plus a burst of ten seconds' worth and twice the app's
``max_channels_per_connection`` (a client subscribing to all its channels at once). A
client that spends it (one that floods) is closed with 4100, which pusher-js answers by
waiting before it reconnects, and is read no more meanwhile. The frames are counted per
read, not per frame: what this costs does not grow with the number of frames.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side
from websockets.protocol import State as WsState
from websockets.streams import StreamReader
from websockets.utils import accept_key

from clarion import metrics
from clarion.protocol.errors import CloseCode

if TYPE_CHECKING:
    from clarion.apps import App
    from clarion.server.context import Context

log = logging.getLogger("clarion.connection")

# The connection slots this layer owns (the connection class declares them).
SLOTS = ("_allowance", "_fragments", "ws")

_KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011}) | frozenset(
    int(code) for code in CloseCode
)
# Frame parsers of connections gone idle, ready for the next connection with frames.
_IDLE_PARSERS: list[WsProtocol] = []
MAX_IDLE_PARSERS = 256
# The code of the step a parser waits in between frames (websockets' ``parse`` loop
# waits in ``StreamReader.at_eof`` for the next frame's first byte). An empty read
# buffer alone does not say that: a parser that has read a frame's first two bytes and
# waits for its mask or payload has an empty buffer too, and handing it to another
# connection would parse that connection's bytes as the rest of this one's frame.
_BETWEEN_FRAMES = StreamReader.at_eof.__code__
# A client's frame allowance at first and at most, beyond the sustained rate: this many
# seconds' worth of it (plus twice the app's max_channels_per_connection).
BURST_SECONDS = 10


def _between_frames(ws: WsProtocol) -> bool:
    """Whether the parser waits for the first byte of a frame (not inside one)."""
    step = ws.parser.gi_yieldfrom  # type: ignore[attr-defined]
    return step is not None and step.gi_code is _BETWEEN_FRAMES


def switching_protocols(method: bytes, headers: dict[bytes, bytes]) -> bytes | None:
    """The 101 response accepting a WebSocket upgrade request, or None when the request
    is not one (version 13). Raises ValueError for a key that is not 16 bytes."""
    key = headers.get(b"sec-websocket-key")
    # (binascii's strict mode is base64.b64decode(validate=True) without its Python steps.)
    if key is not None and len(binascii.a2b_base64(key, strict_mode=True)) != 16:
        raise ValueError("Sec-WebSocket-Key must be 16 bytes in base64")
    if (
        method != b"GET"
        or headers.get(b"upgrade", b"").lower() != b"websocket"
        or key is None
        or headers.get(b"sec-websocket-version") != b"13"
    ):
        return None
    # No extensions are negotiated, so frames are never compressed.
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
    )


class WebSocketLayer:
    """Frames of an upgraded connection (a mixin of the connection class)."""

    if TYPE_CHECKING:
        ctx: Context
        transport: asyncio.Transport
        app: App | None
        socket_id: str
        last_seen: float
        ping_sent_at: float
        ws: WsProtocol | None
        _fragments: list[bytes] | None
        _allowance: float
        _closing: bool
        _upgraded: bool

        def _on_text(self, payload: bytes) -> None: ...
        def close(self, code: int, reason: str) -> None: ...
        def close_with_error(self, code: int, message: str) -> None: ...
        def disconnect(self, code: int, message: str) -> None: ...
        def _stop_reading(self) -> None: ...
    else:
        # Slots of its own would clash with the session's (only one base of a class may
        # have any): the connection class declares SLOTS, with the other layers'.
        __slots__ = ()

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

    def _message_burst(self) -> float:
        """The most frames a client may send at once (its allowance when it connects)."""
        app = self.app
        channels = app.config.max_channels_per_connection if app is not None else 0
        return BURST_SECONDS * self.ctx.settings.max_messages_per_second + 2 * channels

    def _ws_data(self, data: bytes) -> None:
        ws = self._parser_for_frames()
        # Any bytes from the client count as activity and answer our ping.
        now = time.monotonic()
        elapsed = now - self.last_seen
        self.last_seen = now
        self.ping_sent_at = 0.0
        ws.receive_data(data)
        # Counted for the metrics once per read, not once per message.
        frames = texts = size = 0
        for frame in ws.events_received():
            frames += 1
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT:
                if not frame.fin:
                    self._fragments = [bytes(frame.data)]
                    continue
                payload = bytes(frame.data)
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if not frame.fin:
                    continue
                payload = b"".join(self._fragments)
                self._fragments = None
            else:
                if opcode is Opcode.BINARY and not frame.fin:
                    self._fragments = None
                # Binary frames are not part of the protocol and are ignored (docs/protocol.md §1);
                # pings are answered and close frames echoed by the parser itself.
                continue
            texts += 1
            size += len(payload)
            self._on_text(payload)
            if self._closing:
                break
        app = self.app
        if texts and app is not None:
            # (PlainCounts: their additions, without the calls)
            messages_count, bytes_count = app.received
            messages_count.value += texts
            bytes_count.value += size
        # The allowance grows with time at the sustained rate, up to the burst.
        allowance = self._allowance + elapsed * self.ctx.settings.max_messages_per_second
        burst = self._message_burst()
        self._allowance = allowance = (burst if allowance > burst else allowance) - frames
        if allowance < 0.0 and not self._closing:
            self._flooded()
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
            and _between_frames(ws)
        ):
            self.ws = None
            # Clean (open, nothing buffered, nothing queued): another connection may reuse
            # it, which spares building one (a few microseconds) per burst of frames.
            if len(_IDLE_PARSERS) < MAX_IDLE_PARSERS:
                _IDLE_PARSERS.append(ws)

    def _flooded(self) -> None:
        """The client sent frames faster than its allowance: close it with 4100, and read
        nothing more from it (the rest of a flood is not worth parsing)."""
        app = self.app
        log.info("closing %s: frames faster than max_messages_per_second", self.socket_id)
        if app is not None:
            metrics.flood_disconnects.labels(app.id).inc()
        self.close_with_error(int(CloseCode.OVER_CAPACITY), "Too many messages; slow down")
        self._stop_reading()

    def send(self, data: bytes) -> None:
        """Write bytes of this connection's own (a reply, a pong, a close frame): after
        the fan-out frames the hub's outbox holds for it this turn, so that everything
        reaches the socket in the order it was decided (clarion.hub.fanout)."""
        self.ctx.hub.outbox.send(self, data)

    def _flush_ws(self) -> None:
        ws = self.ws
        if ws is None:
            return
        for chunk in ws.data_to_send():
            if chunk:
                self.send(chunk)
            else:
                # The parser is done (close handshake finished or protocol error).
                self._closing = True
                self.transport.close()
                return
        if ws.state is WsState.CLOSED:
            self.transport.close()

    def _send_close(self, code: int, reason: str) -> None:
        """Start the close handshake: our close frame, if the connection is still open."""
        ws = self._parser_for_frames() if self._upgraded else None
        if ws is not None and ws.state is WsState.OPEN:
            ws.send_close(code, reason[:120])
            for chunk in ws.data_to_send():
                if chunk:
                    self.send(chunk)

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

    # --- flow control (asyncio.Protocol) ----------------------------------------------

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
