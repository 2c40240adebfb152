"""Slowloris: sockets that send a request head a byte at a time, or hold descriptors.

A head must be complete ``[server] head_timeout`` seconds (default 10) after its first
byte however slowly it trickles in; an address may have ``max_unfinished_heads_per_ip``
(default 16) heads in progress at once; and at the open-file limit the server keeps
answering ``/up``, refuses WebSocket connections cleanly (4100), logs it once in a while,
counts it, and serves WebSocket connections again as soon as descriptors are free.
"""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.config import app, build_config
from tests.support.metrics import metrics_url, scrape, value
from tests.support.polling import until
from tests.support.raw import http_request, recv_json, ws_connect
from tests.support.server import RunningServer

HEAD_TIMEOUT = 10.0  # the default
SWEEP_INTERVAL = 0.5  # server/node.py
# The test's own reading of a close: the wake-up and a loaded machine.
SLACK = 1.0
TRICKLE = b"GET /up HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100


def dropped(server: RunningServer, reason: str) -> float:
    samples = scrape(metrics_url(server))[1]
    return value(samples, "clarion_http_sockets_dropped_total", reason=reason)


def test_a_trickled_head_is_closed_head_timeout_after_its_first_byte(
    server: RunningServer,
) -> None:
    before = dropped(server, "head_timeout")
    count = 8
    sockets = [socket.create_connection((server.host, server.port)) for _ in range(count)]
    silent = socket.create_connection((server.host, server.port))
    silent_since = time.monotonic()
    first_byte: dict[socket.socket, float] = {}
    closed: dict[socket.socket, float] = {}
    sent = dict.fromkeys(sockets, 0)
    deadline = time.monotonic() + HEAD_TIMEOUT + 6
    next_byte = time.monotonic()
    while len(closed) < count + 1 and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_byte:
            # One byte per socket per second, for as long as the socket stays open.
            for sock in sockets:
                if sock not in closed and sent[sock] < len(TRICKLE):
                    sock.send(TRICKLE[sent[sock] : sent[sock] + 1])
                    first_byte.setdefault(sock, time.monotonic())
                    sent[sock] += 1
            next_byte = now + 1.0
        readable, _, _ = select.select(
            [s for s in [*sockets, silent] if s not in closed], [], [], max(0.0, next_byte - now)
        )
        for sock in readable:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed[sock] = time.monotonic()
    for sock in [*sockets, silent]:
        sock.close()
    assert len(closed) == count + 1, f"{count + 1 - len(closed)} socket(s) still open"
    for sock in sockets:
        held = closed[sock] - first_byte[sock]
        assert HEAD_TIMEOUT - 0.1 <= held <= HEAD_TIMEOUT + SWEEP_INTERVAL + SLACK, held
        assert sent[sock] >= HEAD_TIMEOUT - 1  # it kept trickling all along
    held = closed[silent] - silent_since
    assert HEAD_TIMEOUT - 0.1 <= held <= HEAD_TIMEOUT + SWEEP_INTERVAL + SLACK, held
    assert dropped(server, "head_timeout") - before >= count + 1


def _partial_head(server: RunningServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\n")
    return sock


def test_an_address_may_have_16_unfinished_heads(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    before = dropped(server, "unfinished_heads")
    held = [_partial_head(server) for _ in range(16)]
    # A complete request is never an unfinished head; its answer also means the server
    # has read the sixteen partial heads sent before it.
    assert http_request(server.host, server.port, "GET", "/up")[0] == 200
    refused = _partial_head(server)
    reply = refused.recv(4096)
    assert reply.startswith(b"HTTP/1.1 429"), reply
    assert b"Too many unfinished requests" in reply
    assert refused.recv(4096) == b""  # and closed
    refused.close()
    assert dropped(server, "unfinished_heads") - before == 1
    # A head that completes frees its place.
    held[0].sendall(b"\r\n")
    assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
    another = _partial_head(server)
    another.sendall(b"\r\n")
    assert another.recv(4096).startswith(b"HTTP/1.1 200")
    for sock in [*held, another]:
        sock.close()


# The open-file limit of the server under test: its last quarter (64) is the reserve.
FILE_LIMIT = 256


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture
def limited_server(make_server: Callable[..., RunningServer]) -> Iterator[RunningServer]:
    """A server limited to FILE_LIMIT descriptors; this process may open four times as
    many (for the duration of the test)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4 * FILE_LIMIT:
        pytest.skip(f"needs an open-file limit of {4 * FILE_LIMIT} for the test's own sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = build_config(app(), server={"host": "127.0.0.1"})
    yield make_server(config, preexec_fn=_low_file_limit)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _ws_established(server: RunningServer) -> bool:
    async with await ws_connect(server.ws()) as ws:
        message = await recv_json(ws)
        return message["event"] == "pusher:connection_established"


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True  # nothing to read: open
    except OSError:
        return False


def up_answers(server: RunningServer) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return http_request(server.host, server.port, "GET", "/up")[0] == 200
        except OSError:
            return False

    return check


def _full_and_warned(server: RunningServer) -> list[str]:
    return [line for line in server.output if "open-file limit nearly reached" in line]


def test_idle_sockets_at_the_file_limit_leave_up_answering(limited_server: RunningServer) -> None:
    server = limited_server
    url = metrics_url(server)
    _, before = scrape(url)
    started = time.monotonic()
    idle = [socket.create_connection((server.host, server.port)) for _ in range(2 * FILE_LIMIT)]
    try:
        # The event loop (libuv) accepts a burst of connections all at once, and those
        # past the last descriptor it closes at once, before the server hears of them: a
        # probe inside the burst may be one. Once the burst is in, the sockets accepted
        # into the reserve have closed as many idle ones: /up answers from then on.
        until(up_answers(server), 10, "the burst accepted")
        for _ in range(20):
            assert http_request(server.host, server.port, "GET", "/up")[0] == 200
        # The idle sockets make room for a WebSocket connection too.
        assert asyncio.run(_ws_established(server))
        held = sum(1 for sock in idle if _still_open(sock))
        assert FILE_LIMIT // 2 < held < FILE_LIMIT, held
    finally:
        for sock in idle:
            sock.close()
    _, after = scrape(url)
    assert value(after, "clarion_file_limit_sockets_total") > value(
        before, "clarion_file_limit_sockets_total"
    )
    assert value(after, "clarion_http_sockets_dropped_total", reason="file_limit") > value(
        before, "clarion_http_sockets_dropped_total", reason="file_limit"
    )
    # Logged, but once in a while (every 10 s at most), not once per socket.
    warnings = _full_and_warned(server)
    assert 1 <= len(warnings) <= 1 + (time.monotonic() - started) // 10, warnings


def test_websockets_up_to_the_file_limit_leave_up_answering(
    limited_server: RunningServer,
) -> None:
    server = limited_server

    async def main() -> None:
        clients = []
        try:
            # WebSocket connections are not evicted: they fill the descriptors up to the
            # reserve, then the next is refused.
            for _ in range(FILE_LIMIT):
                ws = await ws_connect(server.ws())
                message = json.loads(await ws.recv())
                clients.append(ws)
                if message["event"] == "pusher:error":
                    assert message["data"] == {
                        "code": 4100,
                        "message": "Over capacity: the server is full",
                    }
                    await asyncio.wait_for(ws.wait_closed(), 10)
                    assert ws.close_code == 4100
                    break
            else:
                raise AssertionError("no WebSocket connection was refused")
            assert len(clients) > FILE_LIMIT // 2
            for _ in range(20):
                status = await asyncio.to_thread(
                    lambda: http_request(server.host, server.port, "GET", "/up")[0]
                )
                assert status == 200
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))

    asyncio.run(main())
    until(lambda: asyncio.run(_ws_established(server)), 10, "a WebSocket connection again")
