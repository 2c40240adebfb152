"""The node's TLS certificate: loaded once at start, loaded again on SIGHUP.

The listening socket keeps the context it was made with for the node's life. Each
handshake is handed to the context of the certificate in use (through the context's
server-name callback, which OpenSSL runs for every ClientHello, with or without SNI), so a
reload builds a complete new context and swaps it in only once the certificate and key
have loaded together. A pair that does not load (a key that does not match, a file cut
short, a file missing) leaves the one in use serving: never a context holding the new
certificate with the old key, which every new handshake would fail against.
"""

from __future__ import annotations

import logging
import ssl
import tempfile

from clarion.config import ServerSettings

log = logging.getLogger("clarion.server")


class Certificates:
    """The ``[server]`` certificate, key and optional CA bundle of one node."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # The listening socket's context: it only hands each handshake to ``serving``.
        self.context: ssl.SSLContext | None = None
        # The context of the certificate in use (the listening one until a reload).
        self.serving: ssl.SSLContext | None = None

    def load(self) -> ssl.SSLContext | None:
        """The context for the listening socket; None when TLS is not configured.

        Raises OSError or ssl.SSLError when the files cannot be used.
        """
        if self.settings.tls_cert is None or self.settings.tls_key is None:
            return None
        context = self._new_context()
        context.sni_callback = self._hand_over
        self.context = self.serving = context
        return context

    def reload(self) -> bool:
        """SIGHUP: load the certificate and key again into a new context and serve new
        connections with it; open connections keep theirs. A pair that does not load
        keeps the certificate in use. Returns whether the new pair is served."""
        if self.context is None:
            return False
        try:
            fresh = self._new_context()
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
            return False
        self.serving = fresh
        log.info("TLS certificate reloaded")
        return True

    def _hand_over(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        """OpenSSL's server-name callback: the handshake goes on with the certificate in
        use (it may be the listening context's own)."""
        serving = self.serving
        if serving is not None and connection.context is not serving:
            connection.context = serving

    def _new_context(self) -> ssl.SSLContext:
        """A server context with the configured certificate (and CA bundle) and key,
        checked against each other by OpenSSL. Raises OSError or ssl.SSLError."""
        settings = self.settings
        assert settings.tls_cert is not None and settings.tls_key is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if settings.tls_ca is None:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            return context
        # The chain is the certificate followed by the CA bundle, in one PEM file.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as chain:
            for path in (settings.tls_cert, settings.tls_ca):
                with open(path, "rb") as part:
                    chain.write(part.read().rstrip(b"\n") + b"\n")
            chain.flush()
            context.load_cert_chain(chain.name, settings.tls_key)
        return context
