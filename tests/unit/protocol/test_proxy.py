"""The client's address behind proxies (protocol/proxy.py): forwarding headers from
trusted peers and the PROXY protocol header, v1 and v2."""

from __future__ import annotations

import socket
import struct

import pytest

from clarion.protocol import proxy

TRUSTED = proxy.networks(("127.0.0.1/32", "10.0.0.0/8", "fd00::/8"))


def address(peer: str, xff: str | None = None, forwarded: str | None = None) -> str:
    return proxy.client_address(peer, TRUSTED, xff, forwarded)


def test_headers_count_only_from_a_trusted_peer() -> None:
    assert address("192.0.2.1", "203.0.113.7") == "192.0.2.1"
    assert address("192.0.2.1", None, "for=203.0.113.7") == "192.0.2.1"
    assert address("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert proxy.client_address("127.0.0.1", (), "203.0.113.7", None) == "127.0.0.1"
    assert address("127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("1.1.1.1, 203.0.113.7, 10.0.0.5", "203.0.113.7"),
        ("203.0.113.7,10.0.0.5,10.9.9.9", "203.0.113.7"),
        ("10.0.0.5, 10.0.0.6", "10.0.0.5"),  # all trusted: the left-most
        ("garbage, 203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, garbage", "127.0.0.1"),  # the walk ends at garbage
        ("203.0.113.7, garbage, 10.0.0.5", "10.0.0.5"),
        ("203.0.113.7:8080", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("", "127.0.0.1"),
        ("203.0.113.7:99999", "127.0.0.1"),
        ("fe80::1%eth0", "127.0.0.1"),
    ],
)
def test_x_forwarded_for(xff: str, expected: str) -> None:
    assert address("127.0.0.1", xff) == expected


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("for=203.0.113.7", "203.0.113.7"),
        ('for="[2001:db8:cafe::17]:4711";proto=https', "2001:db8:cafe::17"),
        ('For="203.0.113.7:80", for=10.0.0.1', "203.0.113.7"),
        ('by=10.0.0.1;for=203.0.113.7;host="a,b"', "203.0.113.7"),
        ("for=unknown", "127.0.0.1"),
        ("for=_hidden, for=10.0.0.2", "10.0.0.2"),
        ("proto=https", "127.0.0.1"),
    ],
)
def test_forwarded(forwarded: str, expected: str) -> None:
    assert address("127.0.0.1", None, forwarded) == expected


def test_x_forwarded_for_wins_over_forwarded() -> None:
    assert address("127.0.0.1", "203.0.113.7", "for=198.51.100.1") == "203.0.113.7"


def feed_all(data: bytes, step: int | None = None) -> tuple[str | None, bytes] | None:
    reader = proxy.HeaderReader()
    step = step or len(data) or 1
    result = None
    for index in range(0, len(data), step):
        assert result is None
        result = reader.feed(data[index : index + step])
    return result


V2 = proxy.V2_SIGNATURE


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2 + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


IPV4_BODY = socket.inet_aton("203.0.113.7") + socket.inet_aton("10.0.0.1") + b"\x01\x02\x03\x04"
IPV6_BODY = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(16) + b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 443\r\nGET", ("203.0.113.7", b"GET")),
        (b"PROXY TCP6 2001:db8::7 ::1 5000 443\r\n", ("2001:db8::7", b"")),
        (b"PROXY UNKNOWN\r\nx", (None, b"x")),
        (b"PROXY UNKNOWN a b c d\r\n", (None, b"")),
        (v2(1, 0x11, IPV4_BODY) + b"GET", ("203.0.113.7", b"GET")),
        (v2(1, 0x21, IPV6_BODY), ("2001:db8::7", b"")),
        (v2(1, 0x11, IPV4_BODY + b"\x04\x00\x01z"), ("203.0.113.7", b"")),
        (v2(0, 0x00, b""), (None, b"")),
        (v2(0, 0x11, IPV4_BODY), (None, b"")),  # LOCAL: the addresses are ignored
        (v2(1, 0x31, bytes(216)), (None, b"")),  # AF_UNIX
        (v2(1, 0x00, b""), (None, b"")),
    ],
)
def test_valid_headers_whole_and_byte_at_a_time(
    data: bytes, expected: tuple[str | None, bytes]
) -> None:
    assert feed_all(data) == expected
    if not expected[1]:
        assert feed_all(data, 1) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000\r\n",
        b"PROXY TCP4 ::1 10.0.0.1 5000 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 65536\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 05000 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 443\n",
        b"PROXY TCP4 203.0.113.7  10.0.0.1 5000 443\r\n",
        b"PROXY " + b"1" * 101 + b"\r\n",  # 109 bytes
        b"PROXY \xff\r\n",
        v2(1, 0x11, b"\x00" * 4),
        v2(2, 0x11, IPV4_BODY),
        v2(1, 0x41, IPV4_BODY),
        V2 + b"\x11\x11\x00\x0c" + IPV4_BODY,  # version 1 in a v2 signature
        V2 + b"\x21\x11\x08\x01",  # 2,049 bytes announced
        b"\r\n\r\nX",
    ],
)
def test_invalid_headers_are_refused(data: bytes) -> None:
    with pytest.raises(proxy.ProxyError):
        feed_all(data)
    with pytest.raises(proxy.ProxyError):
        feed_all(data, 1)


def test_the_longest_v1_line_is_accepted_and_one_more_byte_refused() -> None:
    widest = b"ffff:" * 7 + b"ffff"
    line = b"PROXY UNKNOWN " + widest + b" " + widest + b" 65535 65535\r\n"
    assert len(line) == proxy.MAX_V1_BYTES
    assert feed_all(line, 1) == (None, b"")
    tcp6 = b"PROXY TCP6 " + widest + b" " + widest + b" 65535 65535\r\n"
    assert feed_all(tcp6, 1) == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", b"")
    with pytest.raises(proxy.ProxyError):
        feed_all(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", 1)  # 108 bytes


def test_an_incomplete_header_waits() -> None:
    reader = proxy.HeaderReader()
    assert reader.feed(b"") is None
    assert reader.feed(b"PRO") is None
    assert reader.feed(b"XY TCP4 203.0.113.7 10.0.0.1 1 2\r") is None
    assert reader.feed(b"\n") == ("203.0.113.7", b"")
