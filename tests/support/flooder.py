"""A WebSocket client that floods a server with frames as fast as TCP allows.

Run in a subprocess of its own (``python -m tests.support.flooder HOST PORT KIND``), so
that its writing loop does not take the test process's interpreter lock: it upgrades a
raw socket, then writes one pre-built buffer of masked text frames (``KIND``: ``ping``,
pusher-js's ``pusher:ping``; ``client``, client events on a channel it never joined;
``garbage``, text that is not JSON) over and over. A thread reads what the server sends;
when the server closes the connection, the flooder prints one line ``closed CODE
SECONDS FRAMES`` (the close code, or ``-1`` without a close frame; the seconds from the
first flood byte; the frames written) and at once floods again on a new connection,
until it is killed. It prints ``flooding`` when the first flood starts.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import sys
import threading
import time

PAYLOADS = {
    "ping": b'{"event":"pusher:ping","data":{}}',
    "client": b'{"event":"client-flood","channel":"private-never-joined","data":{}}',
    "garbage": b"this is not JSON at all",
}
# Bytes written per send call: frames repeated to about this size.
BUFFER_BYTES = 64 * 1024


def masked_frame(payload: bytes) -> bytes:
    """One masked text frame (clients must mask, RFC 6455 §5.3); payload < 126 bytes."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def upgrade(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /app/app-key?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: {host}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    received = b""
    while b"connection_established" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        received += chunk
    return sock


def read_close_code(sock: socket.socket, done: threading.Event, code: list[int]) -> None:
    """Read server frames until a close frame (its code goes to ``code``) or the end."""
    buffer = b""
    try:
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                # The socket's timeout (0.2 s) is there for the writing loop; a server
                # that has not closed yet within it is not a close without a frame.
                continue
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 2:
                opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
                start = 2
                if length == 126:
                    if len(buffer) < 4:
                        break
                    length, start = struct.unpack("!H", buffer[2:4])[0], 4
                elif length == 127:
                    if len(buffer) < 10:
                        break
                    length, start = struct.unpack("!Q", buffer[2:10])[0], 10
                if len(buffer) < start + length:
                    break
                payload, buffer = buffer[start : start + length], buffer[start + length :]
                if opcode == 0x8:
                    code.append(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0)
                    return
    except OSError:
        return
    finally:
        done.set()


def flood_once(host: str, port: int, buffer: bytes, per_buffer: int) -> None:
    sock = upgrade(host, port)
    sock.settimeout(0.2)
    done = threading.Event()
    code: list[int] = []
    reader = threading.Thread(target=read_close_code, args=(sock, done, code), daemon=True)
    reader.start()
    started = time.monotonic()
    view = memoryview(buffer)
    sent = 0  # bytes written, so that a partial write never splits the frames
    while not done.is_set():
        try:
            sent += sock.send(view[sent % len(buffer) :])
        except TimeoutError:
            continue  # the server does not read: wait for its close
        except OSError:
            break
    written = sent // len(buffer) * per_buffer
    done.wait(5)
    seconds = time.monotonic() - started
    print(f"closed {code[0] if code else -1} {seconds:.3f} {written}", flush=True)
    sock.close()


def main() -> None:
    host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    frame = masked_frame(PAYLOADS[kind])
    per_buffer = BUFFER_BYTES // len(frame)
    buffer = frame * per_buffer
    print("flooding", flush=True)
    while True:
        try:
            flood_once(host, port, buffer, per_buffer)
        except OSError as exc:
            print(f"error {exc}", flush=True)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
