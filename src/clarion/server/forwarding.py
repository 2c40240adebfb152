"""The client's address on a connection: a PROXY protocol header read before any HTTP
byte, or a trusted proxy's forwarding headers on each request (a mixin of the
connection class, placed before the HTTP layer; the HTTP layer hands it each request
head, before anything else reads the head, when trusted proxies are configured).

The rules themselves (which peers are trusted, which entry of X-Forwarded-For or
Forwarded is the client, what a PROXY header says) are :mod:`clarion.protocol.proxy`;
this layer feeds them and moves the socket's per-address count when the address changes
(:func:`clarion.server.admission.readdress`, so every socket is counted exactly once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from clarion.logs import OncePerInterval
from clarion.protocol import proxy
from clarion.server import admission
from clarion.server.http import HttpLayer

if TYPE_CHECKING:
    from clarion.server.context import Context

SLOTS = ("_proxy", "_via")

# Refused headers and peers, once a minute per kind (a client can send them at will).
_refusals = OncePerInterval(logging.getLogger("clarion.connection"))


class ForwardingLayer(HttpLayer):
    """Where a connection's client really is (a mixin of the connection class)."""

    if TYPE_CHECKING:
        ctx: Context
        transport: asyncio.Transport
        peer: str
        _closing: bool
        # The awaited PROXY header's reader and when the connection began.
        _proxy: tuple[proxy.HeaderReader, float] | None
        # The address the socket comes from: its peer's, or the PROXY header's.
        _via: str
    else:
        __slots__ = ()

    def _forwarding_start(self, now: float) -> bool:
        """At connection_made, once ``peer`` is the socket's: await a PROXY header if the
        server requires one. False when the peer may not send one (the socket is
        dropped). (The connection skips the call when ``proxy_protocol`` is off.)"""
        self._via = self.peer
        settings = self.ctx.settings
        if not settings.proxy_protocol:
            return True
        if settings.trusted_proxies and not proxy.is_trusted(
            self.peer, proxy.networks(tuple(settings.trusted_proxies))
        ):
            _refusals.log(
                logging.WARNING,
                "proxy-untrusted",
                "closed a connection from %s: not a trusted proxy (proxy_protocol is on)",
                self.peer,
            )
            self._drop()
            return False
        self._proxy = (proxy.HeaderReader(), now)
        return True

    def _proxy_data(self, data: bytes) -> None:
        """Bytes while the PROXY header is awaited; what follows it goes to HTTP."""
        assert self._proxy is not None
        try:
            done = self._proxy[0].feed(bytes(data))
        except proxy.ProxyError as error:
            _refusals.log(
                logging.WARNING, "proxy-header", "closed a connection from %s: %s", self.peer, error
            )
            self._drop()
            return
        if done is None:
            return
        address, rest = done
        self._proxy = None
        if address is not None:
            self.peer = self._via = admission.readdress(self.ctx, self.peer, address)
        if rest:
            self._http_data(rest)

    def _drop(self) -> None:
        self._proxy = None
        self._closing = True
        self.transport.abort()

    def check_http(self, now: float) -> None:
        # The PROXY header must be complete within head_timeout of the connection's start,
        # however slowly its bytes come.
        if self._proxy is not None and now - self._proxy[1] > self.ctx.settings.head_timeout:
            self._drop()
            return
        super().check_http(now)

    def _readdress_from_headers(self) -> None:
        """A request head is complete and trusted proxies are configured (the HTTP layer
        asks only then): its forwarding headers may name the client."""
        headers = self._headers
        x_forwarded = headers.get(b"x-forwarded-for")
        forwarded = headers.get(b"forwarded")
        address = proxy.client_address(
            self._via,
            proxy.networks(tuple(self.ctx.settings.trusted_proxies)),
            x_forwarded.decode("latin-1") if x_forwarded is not None else None,
            forwarded.decode("latin-1") if forwarded is not None else None,
        )
        # Per request: a proxy's keep-alive connection carries many clients' requests.
        self.peer = admission.readdress(self.ctx, self.peer, address)
