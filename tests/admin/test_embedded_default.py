"""`make run`'s embedded default (no config file, loopback) opens the admin console with
a random token and prints a ready-to-open URL."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx

from tests.support.paths import ROOT
from tests.support.polling import until

URL = re.compile(r"Admin console: (http://127\.0\.0\.1:\d+)/admin/\?token=(\S+)")


def test_the_embedded_default_prints_the_console_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    # A free port instead of 9602, which a developer's own `make run` may hold.
    env |= {"CLARION_PORT": "0", "CLARION_METRICS_PORT": "0", "CLARION_ADMIN_PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        until(lambda: bool(lines.append(process.stdout.readline()) or URL.search(lines[-1])))
        match = URL.search(lines[-1])
        assert match is not None
        base, token = match.groups()
        assert len(token) >= 16
        # The configuration printed at start shows the token redacted.
        assert not any(token in line for line in lines[:-1])
        reply = httpx.get(f"{base}/admin/?token={token}", timeout=5)
        assert reply.status_code == 303
        assert reply.headers["location"] == "/admin/"
    finally:
        process.terminate()
        process.wait(10)
