"""The HTTP layer's deadlines and head accounting (server/http.py) and the admission's
per-address unfinished heads and descriptor reserve (server/admission.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import pytest

from clarion.server import admission, connection, http
from clarion.server.http import IDLE_HTTP_TIMEOUT, MAX_HEAD_BYTES
from tests.unit.server.edge import UPGRADE, Clock, build_node, open_connection, server_texts


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The time the HTTP layer and the connection read."""
    return Clock().install(monkeypatch, http, connection)


def in_loop(test: Callable[..., None]) -> Callable[..., None]:
    """Run a test inside a running event loop (closing a socket schedules its abort)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            test(*args, **kwargs)

        asyncio.run(main())

    return run


def _head(size: int) -> bytes:
    start, end = b"GET /up HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@in_loop
def test_a_trickled_head_is_closed_head_timeout_after_its_first_byte(clock: Clock) -> None:
    node = build_node(head_timeout=10.0)
    conn, transport = open_connection(node)
    clock.now += 5  # quiet at first: the head's clock starts at its first byte
    conn.data_received(b"G")
    for _ in range(9):
        clock.now += 1.0
        conn.data_received(b"E" if conn._url == b"" else b"x")
        conn.check_http(clock.now)
        assert not transport.closed
    clock.now += 1.01
    conn.check_http(clock.now)
    assert transport.closed


@in_loop
def test_a_silent_socket_has_head_timeout_to_send_a_head(clock: Clock) -> None:
    node = build_node(head_timeout=3.0)
    conn, transport = open_connection(node)
    conn.check_http(clock.now + 2.9)
    assert not transport.closed
    conn.check_http(clock.now + 3.1)
    assert transport.closed


@in_loop
def test_keep_alive_idles_from_the_answer_whatever_trickles_in(clock: Clock) -> None:
    conn, transport = open_connection(build_node())
    conn.data_received(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
    answered = clock.now
    assert transport.data.startswith(b"HTTP/1.1 200")
    for _ in range(int(IDLE_HTTP_TIMEOUT) // 10):
        clock.now += 10
        conn.data_received(b"\r\n")  # bytes that start no request extend nothing
    conn.check_http(answered + IDLE_HTTP_TIMEOUT + 0.1)
    assert transport.closed


@pytest.mark.parametrize("piece", [1, 2, 7, 1000, MAX_HEAD_BYTES])
def test_head_bytes_are_counted_once(piece: int) -> None:
    async def main() -> None:
        node = build_node()
        for size, status in ((MAX_HEAD_BYTES, b"200"), (MAX_HEAD_BYTES + 1, b"431")):
            conn, transport = open_connection(node)
            head = _head(size)
            for start in range(0, len(head), piece):
                conn.data_received(head[start : start + piece])
            while conn._held is not None:  # a read over the budget: parsed turn by turn
                await asyncio.sleep(0)
            assert transport.data.startswith(b"HTTP/1.1 " + status), (size, transport.data)

    asyncio.run(main())


@in_loop
def test_a_header_that_never_ends_is_cut_at_the_limit() -> None:
    conn, transport = open_connection(build_node())
    conn.data_received(b"GET /up HTTP/1.1\r\nX-Endless: ")
    for _ in range(MAX_HEAD_BYTES // 1000 + 1):
        conn.data_received(b"e" * 1000)
    assert transport.data.startswith(b"HTTP/1.1 431")


@in_loop
def test_an_address_has_at_most_its_unfinished_heads() -> None:
    node = build_node(max_unfinished_heads_per_ip=3)
    started = [open_connection(node) for _ in range(3)]
    for conn, _ in started:
        conn.data_received(b"GET /up HTTP/1.1\r\n")
    refused, transport = open_connection(node)
    refused.data_received(b"GET /up HTTP/1.1\r\n")
    assert transport.data.startswith(b"HTTP/1.1 429")
    # A head in one piece never counts; other addresses have their own.
    whole, transport = open_connection(node)
    whole.data_received(b"GET /up HTTP/1.1\r\n\r\n")
    assert transport.data.startswith(b"HTTP/1.1 200")
    other, transport = open_connection(node, peer="10.0.0.2")
    other.data_received(b"GET /up HTTP/1.1\r\n")
    assert not transport.written
    # A head that completes, or a socket that goes, frees its place.
    started[0][0].data_received(b"\r\n")
    started[1][0].connection_lost(None)
    assert node.ctx.unfinished_heads == {"10.0.0.1": 1, "10.0.0.2": 1}
    for _ in range(2):
        conn, transport = open_connection(node)
        conn.data_received(b"GET /up HTTP/1.1\r\n")
        assert not transport.written


def test_the_reserve_serves_http_once_refuses_websockets_and_evicts_the_idle(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        node = build_node()
        files = node.ctx.files
        # Ten descriptors before the reserve; two besides the sockets.
        files.reserved_from, files.others = 10, 2
        monkeypatch.setattr(admission, "_open_files", lambda: files.sockets + 2)
        idle = [open_connection(node) for _ in range(8)]
        assert not any(conn._spare for conn, _ in idle)
        busy, _ = open_connection(node)  # 9 sockets + 2 others: into the reserve
        assert busy._spare
        assert idle[0][1].aborted and not idle[1][1].aborted  # the oldest idle went
        http_only, transport = open_connection(node)
        assert http_only._spare and idle[1][1].aborted
        http_only.data_received(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.data.startswith(b"HTTP/1.1 200")
        assert b"Connection: close" in transport.data
        websocket, transport = open_connection(node)
        websocket.data_received(UPGRADE)
        assert transport.data.startswith(b"HTTP/1.1 101")
        assert b'"code":4100' in server_texts(transport.data.split(b"\r\n\r\n", 1)[1])[0]

    with caplog.at_level(logging.WARNING, logger="clarion.server"):
        monkeypatch.setattr(admission, "_file_limit_logged", [-1e9])
        asyncio.run(main())
    warnings = [r for r in caplog.records if "open-file limit nearly reached" in r.message]
    assert len(warnings) == 1  # three sockets in the reserve, one line


@in_loop
def test_a_request_waiting_for_its_answer_is_not_evicted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = build_node()
    files = node.ctx.files
    files.reserved_from = 2  # the third socket is in the reserve
    monkeypatch.setattr(admission, "_open_files", lambda: files.sockets)
    waiting, transport = open_connection(node)
    waiting._busy = True  # as while the HTTP API handles its request
    _, idle_transport = open_connection(node)
    newcomer, _ = open_connection(node)
    assert newcomer._spare
    assert not transport.aborted and idle_transport.aborted


def _post(body_size: int) -> bytes:
    return (
        b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % body_size
    ) + b"x" * body_size


def test_requests_waiting_behind_an_answer_are_bounded_in_bytes() -> None:
    """Pipelined requests queue while one awaits its answer (the cluster state): their
    bodies may hold at most MAX_PENDING_REQUEST_BYTES before the socket stops being read,
    however few they are."""
    body = 300 * 1024  # well under max_body_bytes
    request = _post(body)

    async def main() -> None:
        node = build_node()
        conn, transport = open_connection(node)
        conn._busy = True  # an answer is under way (as with a Redis round trip)
        fed = 0
        while conn._may_read() and fed < 10:
            conn.data_received(request)
            fed += 1
            while conn._held is not None and conn._may_read():
                await asyncio.sleep(0)  # a turn: the next budget of held bytes is parsed
        assert not conn._may_read()
        assert not transport.reading
        queued = conn._queue
        assert queued is not None and len(queued) < http.MAX_PENDING_REQUESTS
        assert fed == -(-http.MAX_PENDING_REQUEST_BYTES // body)  # stopped at the first over

    asyncio.run(main())


def test_many_small_waiting_requests_still_stop_at_the_count() -> None:
    node = build_node()
    conn, transport = open_connection(node)
    conn._busy = True
    for _ in range(http.MAX_PENDING_REQUESTS):
        conn.data_received(_post(10))
    assert not transport.reading
    assert conn._queue is not None and len(conn._queue) == http.MAX_PENDING_REQUESTS
