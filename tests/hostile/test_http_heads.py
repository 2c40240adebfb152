"""Request heads are counted once, whatever the segments: a 12 KiB head passes in one
piece, in two, in seven or a byte at a time; a head one byte over 16 KiB gets 431 however
it arrives; a pipeline of 20,000 requests gets 20,000 answers, in order."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support.server import RunningServer

HEAD_LIMIT = 16 * 1024


def head_of(size: int, path: str = "/up") -> bytes:
    """A GET head of exactly ``size`` bytes (a padding header makes up the rest)."""
    start = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode()
    end = b"\r\n\r\n"
    head = start + b"p" * (size - len(start) - len(end)) + end
    assert len(head) == size
    return head


def send_in_segments(sock: socket.socket, data: bytes, segments: int) -> None:
    """Write ``data`` in ``segments`` pieces, each pushed on its own (no Nagle), with a
    pause now and then so that the server reads them apart rather than all at once."""
    size = -(-len(data) // segments)
    for index, start in enumerate(range(0, len(data), size)):
        sock.sendall(data[start : start + size])
        if segments < 100 or index % 100 == 99:
            time.sleep(0.002)


def status_after(server: RunningServer, head: bytes, segments: int) -> int:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_in_segments(sock, head, segments)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 "), reply
    return int(reply.split(b" ")[1])


@pytest.mark.parametrize("segments", [1, 2, 7, 12 * 1024])
def test_a_12k_head_passes_in_any_number_of_segments(server: RunningServer, segments: int) -> None:
    assert status_after(server, head_of(12 * 1024), segments) == 200


@pytest.mark.parametrize("segments", [1, 2, 7])
def test_the_head_limit_is_exact(server: RunningServer, segments: int) -> None:
    assert status_after(server, head_of(HEAD_LIMIT), segments) == 200
    assert status_after(server, head_of(HEAD_LIMIT + 1), segments) == 431


def test_20000_pipelined_requests_get_20000_answers_in_order(server: RunningServer) -> None:
    count = 20_000
    # Every other request is a 404 that names its path, so the order can be checked.
    paths = ["/up" if i % 2 == 0 else f"/pipelined-{i}" for i in range(count)]
    requests = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        # Written from a thread while this one reads: the answers come while we send.
        writer = threading.Thread(target=sock.sendall, args=(requests,))
        writer.start()
        received = bytearray()
        answers = 0
        while answers < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
            answers = received.count(b"HTTP/1.1 ")
        writer.join()
    replies = [b"HTTP/1.1 " + part for part in bytes(received).split(b"HTTP/1.1 ")[1:]]
    assert len(replies) == count
    for path, reply in zip(paths, replies, strict=True):
        if path == "/up":
            assert reply.startswith(b"HTTP/1.1 200"), (path, reply)
        else:
            assert reply.startswith(b"HTTP/1.1 404") and path.encode() in reply, (path, reply)
