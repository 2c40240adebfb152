"""Seeded, in-process fuzzers over the three ways client bytes come in: WebSocket frames,
JSON, and HTTP requests.

No exception may escape, and no catch-all may be what saved the day: the connection's
last-resort handler (which logs "handling client input failed") must never fire. Every
output must be well formed: server frames that parse, each a JSON object with an
``event``; HTTP responses with a status line, a Content-Length that matches and a JSON
body. Runs are derandomized (the same examples every run) and bounded to seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side, State

from clarion.protocol import api, messages, names
from clarion.protocol.errors import ApiError, BadMessage
from clarion.server.node import Node
from tests.support import inprocess

FUZZ = settings(
    derandomize=True,
    max_examples=int(os.environ.get("CLARION_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

UPGRADE = (
    b"GET /app/app-key?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\n"
    b"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Failures(logging.Handler):
    """Records the last-resort handler's log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "handling client input failed" in record.getMessage():
            self.records.append(record)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[asyncio.AbstractEventLoop, Node, _Failures]]:
    loop = asyncio.new_event_loop()

    async def make() -> Node:
        return inprocess.node(
            {"client_events": True, "client_event_rate_limit": 1000}, max_connections_per_ip=0
        )

    owner = loop.run_until_complete(make())
    failures = _Failures()
    logger = logging.getLogger("clarion.connection")
    logger.addHandler(failures)
    yield loop, owner, failures
    logger.removeHandler(failures)
    loop.close()


def _inside(loop: asyncio.AbstractEventLoop, feed: Callable[[], None]) -> None:
    """Run ``feed`` as the event loop runs protocol callbacks: inside the running loop."""

    async def call() -> None:
        feed()

    loop.run_until_complete(call())


def _settle(loop: asyncio.AbstractEventLoop) -> None:
    """Let tasks a message started (none with the memory adapter, normally) finish."""

    async def turns() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    loop.run_until_complete(turns())


# --- output checks -----------------------------------------------------------------------


def _server_frames(data: bytes) -> list[Frame]:
    """Parse what the server wrote after its 101 as a client would; fail on bad frames."""
    client = WsProtocol(Side.CLIENT, state=State.OPEN, max_size=None)
    client.receive_data(data)
    assert client.parser_exc is None, client.parser_exc
    frames = [event for event in client.events_received() if isinstance(event, Frame)]
    for frame in frames:
        if frame.opcode is Opcode.TEXT:
            message = json.loads(frame.data)
            assert isinstance(message, dict) and isinstance(message["event"], str)
            if message["event"] == "pusher:error":
                assert set(message["data"]) == {"code", "message"}
        else:
            assert frame.opcode in (Opcode.CLOSE, Opcode.PING, Opcode.PONG), frame
            if frame.opcode is Opcode.CLOSE:
                Close.parse(frame.data)  # a valid close payload
    return frames


def _http_responses(data: bytes) -> list[int]:
    """Parse the server's HTTP responses; fail on anything malformed. The statuses."""
    statuses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, data[:200]
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1" and status.isdigit(), lines[0]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers["Content-Length"])
        body, data = rest[:length], rest[length:]
        assert len(body) == length
        assert headers["Content-Type"] == "application/json"
        json.loads(body)
        statuses.append(int(status))
    return statuses


# --- inputs ------------------------------------------------------------------------------

_names = st.sampled_from(
    [
        "pusher:subscribe",
        "pusher:unsubscribe",
        "pusher:ping",
        "pusher:pong",
        "pusher:signin",
        "pusher:unknown",
        "client-x",
        "client-" + "x" * 300,
        "other",
        "",
    ]
)
_channels = st.sampled_from(
    ["news", "private-a", "presence-a", "private-encrypted-a", "#server-to-user-u", "", "a b"]
) | st.text(max_size=30)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def _messages(draw: st.DrawFn) -> str:
    """Protocol-shaped text: mostly well-formed messages with odd values, some garbage."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        depth = draw(st.integers(1, 1200))
        return "[" * depth + "]" * depth
    data: Any = (
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "channel": _channels,
                    "auth": st.text(max_size=80) | st.just("app-key:" + "0" * 64),
                    "channel_data": st.text(max_size=60) | _json.map(json.dumps),
                    "user_data": st.text(max_size=60) | _json.map(json.dumps),
                },
            )
        )
        if kind < 8
        else draw(_json)
    )
    message: dict[str, Any] = {"event": draw(_names), "data": data}
    if draw(st.booleans()):
        message["channel"] = draw(_channels)
    if kind == 9:
        message["data"] = json.dumps(data)  # data as a JSON string, as pusher-js may send
    return json.dumps(message)


def _masked_text(payload: bytes, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> bytes:
    """A client frame (masked), whatever the state of the message it belongs to."""
    return Frame(opcode, payload, fin).serialize(mask=True, extensions=[])


# --- the frame path ----------------------------------------------------------------------


def _upgraded(owner: Node) -> tuple[Any, inprocess.RecordingTransport, int]:
    conn, transport = inprocess.open_connection(owner)
    conn.data_received(UPGRADE)  # answered at once, without the loop
    assert transport.written.startswith(b"HTTP/1.1 101 ")
    return conn, transport, transport.written.index(b"\r\n\r\n") + 4


def _finish(conn: Any, loop: asyncio.AbstractEventLoop) -> None:
    _settle(loop)
    conn.connection_lost(None)
    _settle(loop)


@FUZZ
@given(texts=st.lists(_messages(), min_size=1, max_size=8), split=st.integers(1, 64))
def test_text_frames(world: Any, texts: list[str], split: int) -> None:
    loop, owner, failures = world
    failures.records.clear()
    conn, transport, start = _upgraded(owner)
    stream = b"".join(_masked_text(text.encode("utf-8", "surrogatepass")) for text in texts)

    def feed() -> None:
        # In pieces of ``split`` bytes: frames cut anywhere.
        for index in range(0, len(stream), split):
            conn.data_received(stream[index : index + split])

    _inside(loop, feed)
    _finish(conn, loop)
    assert failures.records == []
    frames = _server_frames(bytes(transport.written[start:]))
    assert frames[0].opcode is Opcode.TEXT  # connection_established


@FUZZ
@given(chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_arbitrary_bytes_after_the_upgrade(world: Any, chunks: list[bytes]) -> None:
    loop, owner, failures = world
    failures.records.clear()
    conn, transport, start = _upgraded(owner)

    def feed() -> None:
        for chunk in chunks:
            conn.data_received(chunk)

    _inside(loop, feed)
    _finish(conn, loop)
    assert failures.records == []
    _server_frames(bytes(transport.written[start:]))


@FUZZ
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from([Opcode.TEXT, Opcode.CONT, Opcode.BINARY]),
            st.binary(max_size=40) | _messages().map(str.encode),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fragments(world: Any, parts: list[tuple[Opcode, bytes, bool]]) -> None:
    loop, owner, failures = world
    failures.records.clear()
    conn, transport, start = _upgraded(owner)

    def feed() -> None:
        for opcode, payload, fin in parts:
            conn.data_received(_masked_text(payload, fin, opcode))

    _inside(loop, feed)
    _finish(conn, loop)
    assert failures.records == []
    _server_frames(bytes(transport.written[start:]))


# --- the JSON path -----------------------------------------------------------------------


@FUZZ
@given(text=_messages() | st.text(max_size=300))
def test_client_message_parsers(text: str) -> None:
    try:
        message = messages.parse_client_frame(text)
    except BadMessage:
        return
    with contextlib.suppress(BadMessage):
        messages.protocol_data(message)
    for value in (text, json.dumps(message.data)):
        for parse_string in (messages.parse_channel_data, messages.parse_user_data):
            with contextlib.suppress(BadMessage):
                parse_string(value)


_LIMITS = names.EventLimits(
    max_event_payload_bytes=200, max_event_name_length=10, max_channel_name_length=12
)


@st.composite
def _api_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        depth = draw(st.integers(1, 1500))
        return b'{"batch":' + b"[" * depth + b"]" * depth + b"}"
    event = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.text(max_size=15) | _json,
                "channel": _channels | _json,
                "channels": st.lists(_channels, max_size=4) | _json,
                "data": st.text(max_size=300) | _json,
                "socket_id": st.sampled_from(["1.2", "x", ""]) | _json,
                "info": st.text(max_size=20) | _json,
            },
        )
    )
    if kind == 2:
        return json.dumps({"batch": draw(st.lists(st.just(event) | _json, max_size=4))}).encode()
    return json.dumps(event).encode()


@FUZZ
@given(raw=_api_bodies())
def test_api_parsers(raw: bytes) -> None:
    for limits in (names.DEFAULT_LIMITS, _LIMITS):
        for parse in (api.parse_publish, api.parse_batch):
            try:
                parse(raw, limits)
            except ApiError as error:
                assert error.status in (400, 413)


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["info", "filter_by_prefix", "x"]), st.text(max_size=30), max_size=3
    ),
    channel=_channels,
)
def test_api_query_parsers(params: dict[str, str], channel: str) -> None:
    for call in (
        lambda: api.parse_channels_query(params),
        lambda: api.parse_channel_query(channel, params),
        lambda: api.check_users_channel(channel),
    ):
        try:
            call()
        except ApiError as error:
            assert error.status == 400


# --- the HTTP path -----------------------------------------------------------------------

_TOKEN = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=400))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "G\x00T", ""]))
    path = draw(
        st.sampled_from(
            [
                "/",
                "/up",
                "/ready",
                "/apps/1/events",
                "/apps/1/batch_events",
                "/apps/1/channels",
                "/apps/1/channels/news",
                "/apps/1/channels/presence-a/users",
                "/apps/1/users/u/terminate_connections",
                "/app/app-key",
                "http://h/apps/1/events",
                "*",
                "/%zz",
            ]
        )
    )
    query = draw(st.sampled_from(["", "?auth_key=app-key", "?a=%ff&info=user_count"]))
    body = draw(_api_bodies() | st.binary(max_size=100))
    headers = draw(st.lists(st.tuples(_TOKEN, st.text(max_size=30)), max_size=4))
    length = draw(st.sampled_from([str(len(body)), "0", "-1", "abc", "99999999999", None]))
    lines = [f"{method} {path}{query} HTTP/1.1", "Host: x"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if draw(st.booleans()):
        lines.append("Transfer-Encoding: chunked")
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = "\r\n".join(lines).encode("utf-8", "surrogatepass") + b"\r\n\r\n"
    return head + body


@FUZZ
@given(requests=st.lists(_requests(), min_size=1, max_size=3), split=st.integers(1, 500))
def test_http_requests(world: Any, requests: list[bytes], split: int) -> None:
    loop, owner, failures = world
    failures.records.clear()
    conn, transport = inprocess.open_connection(owner)
    stream = b"".join(requests)

    def feed() -> None:
        for index in range(0, len(stream), split):
            conn.data_received(stream[index : index + split])

    _inside(loop, feed)
    _settle(loop)
    upgraded = transport.written.startswith(b"HTTP/1.1 101 ")
    conn.connection_lost(None)
    _settle(loop)
    assert failures.records == []
    if not upgraded:
        for status in _http_responses(bytes(transport.written)):
            assert status < 500 or status == 503, transport.written[:300]
    assert owner.ctx.connections_per_ip == {}
