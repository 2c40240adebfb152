"""The client's real address behind proxies: trusted forwarding headers and the PROXY
protocol, checked where the address matters (the per-address cap and the log).

The servers listen on 127.0.0.1, so with ``trusted_proxies = ["127.0.0.1/32"]`` the test
client is the proxy. Every case is checked through ``max_connections_per_ip = 1`` on the
address the server should have found (a second connection from it is refused with 4100,
another address is accepted) and through the connection's log line (``ip``), written when
the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support import inprocess
from tests.support.config import app, build_config
from tests.support.polling import eventually
from tests.support.raw import TIMEOUT, established, recv_json, ws_connect
from tests.support.server import RunningServer

XFF = "X-Forwarded-For"
Headers = dict[str, str]


def config(**server: Any) -> str:
    return build_config(
        app(),
        server={
            "host": "127.0.0.1",
            "max_connections_per_ip": 1,
            "log_connections": True,
            **server,
        },
    )


@pytest.fixture
def trusting(make_server: Callable[..., RunningServer]) -> RunningServer:
    """A server behind a trusted proxy on 127.0.0.1 (and 10.0.0.0/8 further out)."""
    return make_server(config(trusted_proxies=["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]))


@pytest.fixture
def proxied(make_server: Callable[..., RunningServer]) -> RunningServer:
    """A server behind a PROXY protocol load balancer."""
    return make_server(config(proxy_protocol=True))


async def connect(
    server: RunningServer, headers: Headers | None = None, preamble: bytes = b""
) -> ClientConnection:
    """A WebSocket to the server; ``preamble`` is written on the socket before the HTTP
    upgrade (a PROXY protocol header)."""
    sock = None
    if preamble:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.sendall(preamble)
    return await ws_connect(server.ws(), additional_headers=headers or {}, sock=sock)


async def admitted(server: RunningServer, **how: Any) -> tuple[ClientConnection, str]:
    ws = await connect(server, **how)
    return ws, await established(ws)


async def refused_4100(server: RunningServer, **how: Any) -> None:
    ws = await connect(server, **how)
    message = await recv_json(ws)
    assert message["event"] == "pusher:error", message
    assert message["data"]["code"] == 4100
    await ws.wait_closed()
    assert ws.close_code == 4100


def _closed_records(server: RunningServer) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in list(server.output) if line.startswith("{")]
    return {r["socket_id"]: r for r in records if r.get("message") == "connection closed"}


async def logged_ip(server: RunningServer, ws: ClientConnection, socket_id: str) -> str:
    """Close ``ws`` and return the ``ip`` of its connection's log line."""
    await ws.close()
    await eventually(lambda: socket_id in _closed_records(server))
    ip: str = _closed_records(server)[socket_id]["ip"]
    return ip


async def one_per_address(
    server: RunningServer, first: dict[str, Any], other: dict[str, Any], address: str
) -> None:
    """``first`` (how to connect) comes from ``address``: a second connection the same way
    is refused with 4100 while ``other`` (another address) is accepted; the log line of
    the first says ``address``."""
    ws, socket_id = await admitted(server, **first)
    await refused_4100(server, **first)
    other_ws, _ = await admitted(server, **other)
    await other_ws.close()
    assert await logged_ip(server, ws, socket_id) == address
    # Its slot is free again once it closed: the count went back exactly.
    again, _ = await admitted(server, **first)
    await again.close()


# --- X-Forwarded-For and Forwarded from a trusted proxy ------------------------------------


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(trusting: RunningServer) -> None:
    asyncio.run(
        one_per_address(
            trusting,
            {"headers": {XFF: "203.0.113.7"}},
            {"headers": {XFF: "198.51.100.9"}},
            "203.0.113.7",
        )
    )


def test_a_chain_of_trusted_hops_gives_the_right_most_untrusted_address(
    trusting: RunningServer,
) -> None:
    # What the client wrote itself (1.1.1.1) is left of the address the first trusted
    # proxy saw (203.0.113.7); 10.x are trusted proxies between.
    chain = {"headers": {XFF: "1.1.1.1, 203.0.113.7, 10.0.0.5, 10.1.2.3"}}
    other = {"headers": {XFF: "1.1.1.1, 198.51.100.9, 10.0.0.5"}}
    asyncio.run(one_per_address(trusting, chain, other, "203.0.113.7"))


def test_several_header_lines_are_one_list(trusting: RunningServer) -> None:
    async def run() -> None:
        # Two lines: "9.9.9.9" then "203.0.113.7, 10.0.0.1": the client is 203.0.113.7.
        ws = await ws_connect(
            trusting.ws(),
            additional_headers=[(XFF, "9.9.9.9"), (XFF, "203.0.113.7, 10.0.0.1")],
        )
        socket_id = await established(ws)
        await refused_4100(trusting, headers={XFF: "203.0.113.7"})
        assert await logged_ip(trusting, ws, socket_id) == "203.0.113.7"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("for=203.0.113.7;proto=https;by=10.0.0.1", "203.0.113.7"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="203.0.113.7:8080", for=10.0.0.2', "203.0.113.7"),
        ('for=1.1.1.1, For="203.0.113.7";proto=http, for="[fd00::1]"', "203.0.113.7"),
    ],
)
def test_forwarded_from_a_trusted_proxy(trusting: RunningServer, value: str, address: str) -> None:
    asyncio.run(
        one_per_address(
            trusting,
            {"headers": {"Forwarded": value}},
            {"headers": {"Forwarded": "for=198.51.100.9"}},
            address,
        )
    )


@pytest.mark.parametrize(
    "value",
    ["garbage", "", "unknown", "999.1.1.1", "203.0.113.7:99999", "[::1", ",,,", "\u00e9"],
)
def test_garbage_never_becomes_the_address(trusting: RunningServer, value: str) -> None:
    """An entry that is not an address ends the walk at the last trusted hop (here, the
    proxy itself): never a value the client chose."""

    async def run() -> None:
        headers = {XFF: value.encode("utf-8").decode("latin-1")}
        ws, socket_id = await admitted(trusting, headers=headers)
        await refused_4100(trusting)  # the proxy's own address: 127.0.0.1
        assert await logged_ip(trusting, ws, socket_id) == "127.0.0.1"

    asyncio.run(run())


def test_garbage_left_of_the_real_client_does_not_matter(trusting: RunningServer) -> None:
    asyncio.run(
        one_per_address(
            trusting,
            {"headers": {XFF: "<script>, 203.0.113.7"}},
            {"headers": {XFF: "198.51.100.9"}},
            "203.0.113.7",
        )
    )


def test_headers_from_an_untrusted_peer_are_ignored(
    make_server: Callable[..., RunningServer],
) -> None:
    """A client talking to the server directly cannot pick its address (no spoofing)."""
    server = make_server(config(trusted_proxies=["10.0.0.0/8"]))

    async def run() -> None:
        ws, socket_id = await admitted(server, headers={XFF: "203.0.113.7"})
        # Another "address" from the same socket peer is still 127.0.0.1: refused.
        await refused_4100(server, headers={XFF: "198.51.100.9"})
        await refused_4100(server, headers={"Forwarded": "for=198.51.100.10"})
        assert await logged_ip(server, ws, socket_id) == "127.0.0.1"

    asyncio.run(run())


def test_without_trusted_proxies_the_headers_are_ignored(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(config())

    async def run() -> None:
        ws, socket_id = await admitted(server, headers={XFF: "203.0.113.7"})
        await refused_4100(server, headers={XFF: "198.51.100.9"})
        assert await logged_ip(server, ws, socket_id) == "127.0.0.1"

    asyncio.run(run())


# --- the PROXY protocol ------------------------------------------------------------------


def v1(source: str, family: str = "TCP4", destination: str = "127.0.0.1") -> bytes:
    return f"PROXY {family} {source} {destination} 56324 443\r\n".encode()


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(source: str | None, *, command: int = 1, tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY (``command`` 1) over TCP from ``source``, or LOCAL (0)."""
    if source is None:
        body, family = b"", 0x00
    elif ":" in source:
        body = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1")
        body += struct.pack("!HH", 56324, 443)
        family = 0x21
    else:
        body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
        body += struct.pack("!HH", 56324, 443)
        family = 0x11
    body += tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(
    ("first", "other", "address"),
    [
        (v1("203.0.113.7"), v1("198.51.100.9"), "203.0.113.7"),
        (v1("2001:db8::7", "TCP6", "::1"), v1("2001:db8::8", "TCP6", "::1"), "2001:db8::7"),
        (v2("203.0.113.7"), v2("198.51.100.9"), "203.0.113.7"),
        (v2("2001:db8::7"), v2("2001:db8::8"), "2001:db8::7"),
        # A TLV (type 0x04, a NOOP) after the addresses is skipped.
        (v2("203.0.113.7", tlvs=b"\x04\x00\x03abc"), v2("198.51.100.9"), "203.0.113.7"),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6", "v2-tlv"],
)
def test_proxy_protocol_names_the_client(
    proxied: RunningServer, first: bytes, other: bytes, address: str
) -> None:
    asyncio.run(one_per_address(proxied, {"preamble": first}, {"preamble": other}, address))


@pytest.mark.parametrize(
    "local",
    [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", v2(None, command=0)],
    ids=["v1-unknown", "v1-unknown-with-addresses", "v2-local"],
)
def test_unknown_and_local_use_the_socket_peer(proxied: RunningServer, local: bytes) -> None:
    asyncio.run(
        one_per_address(proxied, {"preamble": local}, {"preamble": v1("198.51.100.9")}, "127.0.0.1")
    )


def test_a_header_sent_a_byte_at_a_time(proxied: RunningServer) -> None:
    async def run() -> None:
        for header, address in (
            (v1("203.0.113.7"), "203.0.113.7"),
            (v2("2001:db8::9"), "2001:db8::9"),
        ):
            sock = socket.create_connection((proxied.host, proxied.port), timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in header:
                sock.sendall(bytes([byte]))
                time.sleep(0.002)  # pacing, so that the bytes go in separate segments
            ws = await ws_connect(proxied.ws(), sock=sock)
            socket_id = await established(ws)
            await refused_4100(proxied, preamble=header)
            assert await logged_ip(proxied, ws, socket_id) == address

    asyncio.run(run())


def _closed_without_answer(server: RunningServer, data: bytes) -> None:
    """The server closes a socket that starts with ``data`` and answers nothing."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data)
            received = sock.recv(4096)
        except ConnectionResetError:
            received = b""
        assert received == b""


@pytest.mark.parametrize(
    "data",
    [
        # No header at all: a plain upgrade request.
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2 extra\r\n",
        b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 99999\r\n",
        b"PROXY TCP5 203.0.113.7 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\n",
        b"PROXY " + b"9" * 200,  # longer than 107 bytes without an end of line
        b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # IPv4 addresses truncated
        V2_SIGNATURE + b"\x21\x51\x00\x0c" + bytes(12),  # family 5
        V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64),  # 65,535 bytes announced
        b"\r\n\r\n\x00\r\nQUIT?",  # a broken signature
    ],
    ids=[
        "none",
        "v1-extra-field",
        "v1-wrong-family",
        "v1-bad-port",
        "v1-unknown-protocol",
        "v1-bare-lf",
        "v1-oversized",
        "v1-unknown-oversized",
        "v2-version",
        "v2-command",
        "v2-truncated",
        "v2-family",
        "v2-oversized",
        "v2-signature",
    ],
)
def test_a_missing_or_malformed_header_is_closed(proxied: RunningServer, data: bytes) -> None:
    _closed_without_answer(proxied, data)

    # Nothing of it counted: the one allowed connection from 127.0.0.1 still opens.
    async def run() -> None:
        ws, _ = await admitted(proxied, preamble=b"PROXY UNKNOWN\r\n")
        await ws.close()

    asyncio.run(run())


def test_proxy_protocol_then_a_trusted_proxys_forwarding_header(
    make_server: Callable[..., RunningServer],
) -> None:
    """A load balancer (PROXY) in front of a trusted proxy (X-Forwarded-For)."""
    server = make_server(
        config(proxy_protocol=True, trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    )
    first = {"preamble": v1("10.0.0.9"), "headers": {XFF: "203.0.113.7"}}
    other = {"preamble": v1("10.0.0.9"), "headers": {XFF: "198.51.100.9"}}
    asyncio.run(one_per_address(server, first, other, "203.0.113.7"))


def test_with_trusted_proxies_only_they_may_send_a_proxy_header() -> None:
    """With trusted_proxies set, a peer outside them is closed at once (in-process: a
    test server on 127.0.0.1 could not be reached by its own readiness check)."""

    async def run() -> None:
        owner = inprocess.node(proxy_protocol=True, trusted_proxies=["10.0.0.0/8"])
        conn, transport = inprocess.open_connection(owner, ("192.0.2.1", 4000))
        assert transport.aborted and transport.written == b""
        conn.connection_lost(None)  # as the loop calls it after the abort
        assert owner.ctx.connections_per_ip == {}  # its count was given back
        trusted, transport = inprocess.open_connection(owner, ("10.1.1.1", 4000))
        trusted.data_received(v1("203.0.113.7"))
        assert not transport.aborted
        assert trusted.peer == "203.0.113.7"
        assert owner.ctx.connections_per_ip == {"203.0.113.7": 1}
        trusted.connection_lost(None)
        assert owner.ctx.connections_per_ip == {}

    asyncio.run(run())
