"""Start real Clarion servers for the tests: a subprocess on a port the OS picks."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
import pytest

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CONFIG = """
[server]
host = "127.0.0.1"

[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = true

[[apps]]
id = "2"
key = "other-key"
secret = "other-secret"

[[apps]]
id = "3"
key = "disabled-key"
secret = "disabled-secret"
enabled = false

[[apps]]
id = "4"
key = "quota-key"
secret = "quota-secret"
max_connections = 2
"""


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
    config_dir: Path, config: str = DEFAULT_CONFIG, env: dict[str, str] | None = None
) -> RunningServer:
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
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        match = _LISTENING.search(line)
        if match:
            server = RunningServer(
                process, match.group(2), int(match.group(3)), output, tls=match.group(1) == "https"
            )
            _drain(process, output)
            # The tests' own certificates are self-signed: readiness is checked unverified.
            unverified = ssl._create_unverified_context() if server.tls else None
            with urllib.request.urlopen(server.http + "/up", timeout=5, context=unverified) as r:
                assert r.status == 200
            return server
    process.kill()
    raise RuntimeError("Clarion did not start:\n" + "".join(output))


def _drain(process: subprocess.Popen[str], output: list[str]) -> None:
    """Keep reading the server's output so its pipe never fills up."""
    import threading

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=pump, daemon=True).start()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("clarion"))
    yield running
    running.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(config: str = DEFAULT_CONFIG, env: dict[str, str] | None = None) -> RunningServer:
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        running = start_server(sub, config, env)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def make_driver(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start pusher-js node drivers for any server (``make_driver(server, env=...)``); all
    are ended, with their clients, at teardown."""
    from tests.integration.pusherjs import Driver

    drivers: list[Driver] = []

    def make(target: RunningServer, env: dict[str, str] | None = None) -> Driver:
        log = tmp_path / f"driver{len(drivers)}.log"
        driver = Driver(target.host, target.port, log, env=env)
        drivers.append(driver)
        return driver

    try:
        yield make
    finally:
        for driver in drivers:
            driver.close()


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
