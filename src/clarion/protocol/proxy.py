"""The client's real address behind proxies: trusted networks, forwarding headers and the
PROXY protocol header (v1 text, v2 binary), sans-I/O.

Forwarding headers (``X-Forwarded-For``, else ``Forwarded: for=``) are read only when
the peer is trusted (``[server] trusted_proxies``): a client talking to the server
directly could write any address in them. The client is then the right-most address of
the chain (the header's addresses, then the peer) that is not itself trusted: each
trusted proxy appends the address it saw, so the addresses right of the first untrusted
one were written by proxies, and everything left of it by someone we cannot check. An
entry that is not an address (``unknown``, an obfuscated name, garbage) ends the walk:
the address is then the last trusted one walked, never a value the client chose.

A PROXY protocol header (HAProxy's, also sent by cloud TCP load balancers) starts the
connection before any HTTP byte. :class:`HeaderReader` takes the bytes as they come and
says when the header is complete, and what it says: the client's address, or None for
``UNKNOWN`` (v1) and ``LOCAL`` or non-IP families (v2), where the connection is the
proxy's own (a health check) and the socket's peer is used. The v1 line is at most 107
bytes, a v2 header at most :data:`MAX_V2_BYTES`; anything else is an error, raised as
soon as the bytes rule it out.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The v1 line, "PROXY TCP6 <39> <39> <5> <5>\r\n" at its longest (the specification's).
MAX_V1_BYTES = 107
V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# A v2 header: 16 bytes, then addresses (216 bytes for AF_UNIX) and TLVs. Load balancers
# send a few TLVs (a VPC endpoint id, a TLS summary); more than this is refused.
MAX_V2_BYTES = 16 + 2048


class ProxyError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


@functools.lru_cache(maxsize=8)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """The trusted networks of ``[server] trusted_proxies`` (raise ValueError for one that
    is not a CIDR or an address)."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def parse_address(text: str) -> Address | None:
    """An address as forwarding headers write it (``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]``, ``[::1]:80``), or None when it is not one. IPv4-mapped IPv6 addresses are
    taken as IPv4."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return None
    return address


def _is_port(text: str) -> bool:
    digits = text[1:]
    return (
        text.startswith(":") and digits.isascii() and digits.isdigit() and int(digits) <= 65535
    )


def is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in trusted)


def x_forwarded_for(value: str) -> list[str]:
    """The entries of ``X-Forwarded-For`` (every header line, joined by commas), in order."""
    return [entry.strip() for entry in value.split(",")]


def forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of ``Forwarded`` (RFC 7239), one per element, in order; an
    element without ``for=`` gives an empty entry (which is not an address)."""
    entries: list[str] = []
    for element in _split(value, ","):
        found = ""
        for pair in _split(element, ";"):
            name, _, raw = pair.partition("=")
            if name.strip().lower() == "for":
                raw = raw.strip()
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1].replace('\\"', '"')
                found = raw
                break
        entries.append(found)
    return entries


def _split(value: str, separator: str) -> list[str]:
    """``value`` split at ``separator`` outside quoted strings."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return parts


def client_address(
    peer: str,
    trusted: tuple[Network, ...],
    x_forwarded: str | None,
    forwarded: str | None,
) -> str:
    """The client's address for a request from ``peer`` (see the module docstring)."""
    if not trusted or (x_forwarded is None and forwarded is None):
        return peer
    if not is_trusted(peer, trusted):
        return peer  # headers from an untrusted peer are the client's own words
    chain = x_forwarded_for(x_forwarded) if x_forwarded is not None else []
    if x_forwarded is None and forwarded is not None:
        chain = forwarded_for(forwarded)
    address = peer
    for entry in reversed(chain):
        parsed = parse_address(entry)
        if parsed is None:
            break  # not an address: nothing left of it can be checked
        address = str(parsed)
        if not any(parsed in network for network in trusted):
            break
    return address


# --- the PROXY protocol header -------------------------------------------------------


class HeaderReader:
    """Reads one PROXY protocol header from the first bytes of a connection."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> tuple[str | None, bytes] | None:
        """Take ``data``; None while the header is incomplete, else the client's address
        (None: use the socket's peer) and the bytes after the header. Raises
        :class:`ProxyError` as soon as the bytes cannot be a valid header."""
        buffer = self.buffer + data
        self.buffer = buffer
        if buffer[:12] == V2_SIGNATURE[: len(buffer[:12])] and buffer[:1] == b"\r":
            return _v2(buffer)
        if buffer[:6] == V1_PREFIX[: len(buffer[:6])]:
            return _v1(buffer)
        raise ProxyError("the connection does not start with a PROXY protocol header")


def _v1(buffer: bytes) -> tuple[str | None, bytes] | None:
    end = buffer.find(b"\r\n", 0, MAX_V1_BYTES)
    if end < 0:
        if len(buffer) >= MAX_V1_BYTES or b"\n" in buffer:
            raise ProxyError(f"PROXY v1 line longer than {MAX_V1_BYTES} bytes or malformed")
        return None
    line, rest = buffer[:end], buffer[end + 2 :]
    try:
        parts = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 line is not ASCII") from None
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None, rest
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError("PROXY v1 line must be PROXY TCP4|TCP6 src dst sport dport")
    _, family, source, destination, source_port, destination_port = parts
    version = 4 if family == "TCP4" else 6
    for port in (source_port, destination_port):
        if not port.isdigit() or int(port) > 65535 or (len(port) > 1 and port[0] == "0"):
            raise ProxyError(f"PROXY v1 port {port!r} is not valid")
    addresses = []
    for text in (source, destination):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ProxyError(f"PROXY v1 address {text!r} is not valid") from None
        if address.version != version:
            raise ProxyError(f"PROXY v1 address {text!r} is not {family}")
        addresses.append(address)
    return str(addresses[0]), rest


def _v2(buffer: bytes) -> tuple[str | None, bytes] | None:
    if len(buffer) < 16:
        return None
    if buffer[:12] != V2_SIGNATURE:
        raise ProxyError("PROXY v2 signature is not valid")
    version, command = buffer[12] >> 4, buffer[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyError("PROXY v2 version or command is not valid")
    length = int.from_bytes(buffer[14:16], "big")
    if 16 + length > MAX_V2_BYTES:
        raise ProxyError(f"PROXY v2 header longer than {MAX_V2_BYTES} bytes")
    if len(buffer) < 16 + length:
        return None
    body, rest = buffer[16 : 16 + length], buffer[16 + length :]
    if command == 0:
        return None, rest  # LOCAL: the proxy's own connection
    family = buffer[13] >> 4
    if family == 1:  # AF_INET: source, destination (4 bytes each), two ports
        if length < 12:
            raise ProxyError("PROXY v2 IPv4 addresses are truncated")
        return str(ipaddress.IPv4Address(body[:4])), rest
    if family == 2:  # AF_INET6
        if length < 36:
            raise ProxyError("PROXY v2 IPv6 addresses are truncated")
        address = ipaddress.IPv6Address(body[:16])
        mapped = address.ipv4_mapped
        return str(mapped if mapped is not None else address), rest
    if family in (0, 3):  # AF_UNSPEC, AF_UNIX: no IP address to give
        return None, rest
    raise ProxyError("PROXY v2 address family is not valid")
