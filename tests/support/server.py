"""Real Clarion servers for the tests: a subprocess on a port the OS picks."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.config import DISABLED_APP, OTHER_APP, QUOTA_APP, app, build_config
from tests.support.paths import ROOT

DEFAULT_CONFIG = build_config(
    app(client_events=True),
    OTHER_APP,
    DISABLED_APP,
    QUOTA_APP,
    server={"host": "127.0.0.1"},
)


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    host: str
    port: int
    output: list[str]
    tls: bool = False

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def ws(self, key: str = "app-key", query: str = "protocol=7&client=js&version=8.6.0") -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/app/{key}?{query}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


_LISTENING = re.compile(r"Clarion listening on (https?)://([\d.]+):(\d+)")


def start_server(
    config_dir: Path,
    config: str = DEFAULT_CONFIG,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> RunningServer:
    """Start a server; ``preexec_fn`` runs in its process before it starts (say, to lower
    a resource limit); ``on_line`` is called with each line it prints before it listens
    (say, to start what it waits for once it says it waits)."""
    path = config_dir / "clarion.toml"
    path.write_text(textwrap.dedent(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", "serve", "--config", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "CLARION_METRICS_PORT": "0",  # several test servers run side by side
            "CLARION_DRAIN_WINDOW": "0.2",  # stopping a test server drains briefly
            **(env or {}),
            "PYTHONUNBUFFERED": "1",
        },
        cwd=ROOT,
        preexec_fn=preexec_fn,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if on_line is not None:
            on_line(line)
        match = _LISTENING.search(line)
        if match:
            server = RunningServer(
                process, match.group(2), int(match.group(3)), output, tls=match.group(1) == "https"
            )
            _drain(process, output)
            if "proxy_protocol = true" in config:
                _check_up_through_proxy(server)
                return server
            # The tests' own certificates are self-signed: readiness is checked unverified.
            unverified = ssl._create_unverified_context() if server.tls else None
            with urllib.request.urlopen(server.http + "/up", timeout=5, context=unverified) as r:
                assert r.status == 200
            return server
    process.kill()
    raise RuntimeError("Clarion did not start:\n" + "".join(output))


def _check_up_through_proxy(server: RunningServer) -> None:
    """GET /up on a server that requires a PROXY protocol header (the proxy's own check)."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"PROXY UNKNOWN\r\nGET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply


def _drain(process: subprocess.Popen[str], output: list[str]) -> None:
    """Keep reading the server's output so its pipe never fills up."""

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=pump, daemon=True).start()
