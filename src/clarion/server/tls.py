"""The node's TLS certificate: loaded once at start, loaded again on SIGHUP.

One ``ssl.SSLContext`` serves the listening socket for the node's life; a reload puts
the new certificate and key into that same context, so new connections get them and
open ones keep theirs.
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
        self.context: ssl.SSLContext | None = None

    def load(self) -> ssl.SSLContext | None:
        """The context for the listening socket; None when TLS is not configured.

        Raises OSError or ssl.SSLError when the files cannot be used.
        """
        if self.settings.tls_cert is None or self.settings.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load_into(context)
        self.context = context
        return context

    def reload(self) -> None:
        """SIGHUP: load the certificate and key again; new connections get them. A
        failed reload keeps the certificate in use."""
        if self.context is None:
            return
        try:
            self._load_into(self.context)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
        else:
            log.info("TLS certificate reloaded")

    def _load_into(self, context: ssl.SSLContext) -> None:
        settings = self.settings
        assert settings.tls_cert is not None and settings.tls_key is not None
        if settings.tls_ca is None:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            return
        # The chain is the certificate followed by the CA bundle, in one PEM file.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as chain:
            for path in (settings.tls_cert, settings.tls_ca):
                with open(path, "rb") as part:
                    chain.write(part.read().rstrip(b"\n") + b"\n")
            chain.flush()
            context.load_cert_chain(chain.name, settings.tls_key)
