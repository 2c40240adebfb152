"""A real redis-server per test module, started (and killable) by the tests themselves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RunningServer


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = (
                "redis-server (Debian package redis-server) is not on the PATH: "
                "the cluster tests need it"
            )
            # CI sets CLARION_REQUIRE_REDIS=1: there a missing redis-server is a failure.
            if os.environ.get("CLARION_REQUIRE_REDIS") == "1":
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def command(self, *args: str) -> bytes:
        """One raw command (inline protocol), for inspecting keys in tests."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall((" ".join(args) + "\r\n").encode())
            return conn.recv(65536)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(_free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def cluster_config(
    redis: RedisServer, lease: float = 3.0, app_extra: str = "", webhook_delay: float = 0
) -> str:
    return f"""
[cluster]
adapter = "redis"
redis_url = "{redis.url}"
prefix = "test"
node_lease = {lease}

[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = true
webhook_delay = {webhook_delay}
{app_extra}
"""


@pytest.fixture
def two_nodes(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> tuple[RunningServer, RunningServer]:
    config = cluster_config(redis_server)
    return make_server(config), make_server(config)
