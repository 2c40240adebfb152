"""Self-signed certificates for the TLS tests (the server's and Redis')."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with openssl for one test."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
