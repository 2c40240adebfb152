"""The official server SDKs: as ground truth (a capture HTTP server and a Node runner) and
as clients of a running server (``python_sdk``).

The Python SDK (PyPI ``pusher``) is imported directly; the Node SDK (npm ``pusher``, installed
in ``tests/js/node_modules``) is driven by small scripts run with ``node``. Nothing here reads
fixed test-vector files: every expected value is produced by an SDK while the tests run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pusher
import pytest

from tests.support.paths import JS_DIR, NODE_MODULES
from tests.support.server import RunningServer

# The credentials of Pusher's own documentation examples.
APP_ID = "3"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"


@dataclass(frozen=True)
class Captured:
    """One HTTP request exactly as an SDK put it on the wire."""

    method: str
    path: str
    raw_query: str
    body: bytes


class CaptureServer:
    """Records every request (method, raw path, raw query, body) and answers ``200 {}``."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        captured = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                captured.append(Captured(self.command, path, query, body))
                reply = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = _record
            do_POST = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def capture_server() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def run_node(script: str, *args: str) -> Any:
    """Run ``script`` with the Node SDK importable; its stdout must be one JSON document."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "pusher").is_dir():
        # A missing tool is a failure, not a skip: `make test` installs both.
        pytest.fail("node and tests/js/node_modules/pusher are needed (make setup installs them)")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    result = subprocess.run(
        [node, "-e", script, "--", *args],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"node failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout)


def python_sdk(
    server: RunningServer,
    app_id: str = "1",
    key: str = "app-key",
    secret: str = "app-secret",
    **options: Any,
) -> pusher.Pusher:
    """The PyPI ``pusher`` SDK pointed at ``server`` (plain HTTP; ``options`` go to it)."""
    return pusher.Pusher(
        app_id=app_id,
        key=key,
        secret=secret,
        host=server.host,
        port=server.port,
        ssl=False,
        **options,
    )
