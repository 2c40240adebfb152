"""The node's certificate: a reload swaps in a new context only when the pair loads."""

from __future__ import annotations

from pathlib import Path

from clarion.config import ServerSettings
from clarion.server.tls import Certificates
from tests.support.certificates import self_signed_certificate


def test_a_reload_swaps_the_serving_context_only_for_a_pair_that_loads(tmp_path: Path) -> None:
    first_cert, first_key = self_signed_certificate(tmp_path, "first")
    second_cert, second_key = self_signed_certificate(tmp_path, "second")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(first_cert.read_bytes())
    key.write_bytes(first_key.read_bytes())
    certificates = Certificates(ServerSettings(tls_cert=str(cert), tls_key=str(key)))
    listening = certificates.load()
    assert listening is not None and certificates.serving is listening

    cert.write_bytes(second_cert.read_bytes())  # the old key beside the new certificate
    assert not certificates.reload()
    key.write_text("not a key")
    assert not certificates.reload()
    key.unlink()
    assert not certificates.reload()
    assert certificates.serving is listening

    key.write_bytes(second_key.read_bytes())
    assert certificates.reload()
    assert certificates.serving is not listening and certificates.context is listening


def test_no_tls_configured() -> None:
    certificates = Certificates(ServerSettings())
    assert certificates.load() is None
    assert not certificates.reload()
