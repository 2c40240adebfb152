"""Bare-asyncio reference server: the floor Clarion's fan-out is compared against.

uvloop, one ``asyncio.Protocol`` per connection, nothing else per socket. It speaks just
enough of the Pusher protocol for the benchmark's load generator:

* ``GET /app/{key}`` with a WebSocket upgrade: 101 (``Sec-WebSocket-Accept`` from
  ``websockets.utils.accept_key``), then ``pusher:connection_established``;
* ``pusher:subscribe`` -> ``pusher_internal:subscription_succeeded``; ``pusher:ping`` ->
  ``pusher:pong``; WebSocket pings and close frames are answered;
* ``POST /apps/{id}/events`` (keep-alive, pipelining allowed): the JSON body is decoded,
  ONE Pusher event frame is built, and it is written with ``transport.write`` to every
  subscriber of the channel; the answer is ``200 {}``. The signature is *not* checked:
  the reference measures the cost of the write loop, which is what Clarion's per-publish
  work is amortised against.
* ``GET /up`` -> 200 (readiness).

Run: ``python bench/reference_server.py --port 6002``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal

import msgspec
import uvloop
from websockets.utils import accept_key

_decode = msgspec.json.decode
_encode = msgspec.json.encode

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_BUFFER = 1 << 20


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """An unmasked server frame with FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


PONG = ws_frame(b'{"event":"pusher:pong","data":{}}')
ESTABLISHED_DATA = '{"socket_id":"%d.%d","activity_timeout":120}'

# channel name -> {connection: transport}
CHANNELS: dict[str, dict[Conn, asyncio.Transport]] = {}
_next_id = 0


def unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class Conn(asyncio.Protocol):
    __slots__ = ("buf", "channels", "transport", "ws")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.ws = False
        self.channels: list[str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channels:
            for name in self.channels:
                subs = CHANNELS.get(name)
                if subs is not None:
                    subs.pop(self, None)
        self.channels = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        buf = self._frames(buf) if self.ws else self._http(buf)
        if len(buf) > MAX_BUFFER:
            self.transport.abort()
            buf = b""
        self.buf = buf

    # --- HTTP ---------------------------------------------------------------------

    def _http(self, buf: bytes) -> bytes:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return buf
            lines = buf[:end].split(b"\r\n")
            try:
                method, target, _ = lines[0].split(b" ", 2)
            except ValueError:
                self.transport.write(BAD)
                self.transport.close()
                return b""
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if method == b"GET" and headers.get(b"upgrade", b"").lower() == b"websocket":
                return self._upgrade(target, headers, buf[end + 4 :])
            length = int(headers.get(b"content-length", b"0"))
            if len(buf) < end + 4 + length:
                return buf
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            path = target.split(b"?", 1)[0]
            if method == b"POST" and path.endswith(b"/events"):
                self._publish(body)
                self.transport.write(OK)
            elif method == b"GET" and path == b"/up":
                self.transport.write(OK)
            else:
                self.transport.write(NOT_FOUND)

    def _upgrade(self, target: bytes, headers: dict[bytes, bytes], rest: bytes) -> bytes:
        global _next_id
        key = headers.get(b"sec-websocket-key")
        if not target.startswith(b"/app/") or key is None:
            self.transport.write(BAD)
            self.transport.close()
            return b""
        _next_id += 1
        established = _encode(
            {
                "event": "pusher:connection_established",
                "data": ESTABLISHED_DATA % (1, _next_id),
            }
        )
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_key(key.decode()).encode()
            + b"\r\n\r\n"
            + ws_frame(established)
        )
        self.ws = True
        return self._frames(rest) if rest else b""

    def _publish(self, body: bytes) -> None:
        try:
            msg = _decode(body)
            channels = msg.get("channels") or [msg["channel"]]
            name = msg["name"]
            data = msg["data"]
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
            return
        for channel in channels:
            subs = CHANNELS.get(channel)
            if not subs:
                continue
            frame = ws_frame(_encode({"event": name, "channel": channel, "data": data}))
            for transport in subs.values():
                transport.write(frame)

    # --- WebSocket frames (client frames are masked) -------------------------------

    def _frames(self, buf: bytes) -> bytes:
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return buf
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return buf
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            masked = b1 & 0x80
            if len(buf) < pos + (4 if masked else 0) + n:
                return buf
            if masked:
                payload = unmask(buf[pos : pos + 4], buf[pos + 4 : pos + 4 + n])
                pos += 4
            else:
                payload = buf[pos : pos + n]
            buf = buf[pos + n :]
            opcode = b0 & 0x0F
            if opcode == 1:
                self._message(payload)
            elif opcode == 8:
                self.transport.write(ws_frame(payload[:2], 8))
                self.transport.close()
                return b""
            elif opcode == 9:
                self.transport.write(ws_frame(payload, 10))
        return buf

    def _message(self, payload: bytes) -> None:
        try:
            msg = _decode(payload)
            event = msg.get("event")
        except (msgspec.DecodeError, AttributeError):
            return
        if event == "pusher:subscribe":
            data = msg.get("data")
            channel = data.get("channel") if isinstance(data, dict) else None
            if not isinstance(channel, str):
                return
            CHANNELS.setdefault(channel, {})[self] = self.transport
            if self.channels is None:
                self.channels = []
            self.channels.append(channel)
            self.transport.write(
                ws_frame(
                    _encode(
                        {
                            "event": "pusher_internal:subscription_succeeded",
                            "channel": channel,
                            "data": "{}",
                        }
                    )
                )
            )
        elif event == "pusher:ping":
            self.transport.write(PONG)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, host, port, backlog=4096, reuse_address=True)
    print(f"reference server listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6002)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
