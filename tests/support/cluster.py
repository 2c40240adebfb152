"""Several Clarion nodes on one real Redis: a redis-server the tests start (and kill)
themselves, the config of a cluster node, and what the cluster tests ask of a node."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pusher
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.config import app, build_config
from tests.support.raw import established, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None
    tls: tuple[Path, Path] | None = None  # certificate and key: TLS only, on ``port``
    extra: tuple[str, ...] = ()  # more command-line options (``--replicaof``, say)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"

    def _options(self) -> list[str]:
        options = ["--requirepass", self.password] if self.password else []
        options += self.extra
        if self.tls is None:
            return [*options, "--port", str(self.port)]
        cert, key = self.tls
        return [
            *options,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-auth-clients",
            "no",
        ]

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
        self.launch(
            [
                binary,
                *self._options(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ]
        )

    def launch(self, argv: list[str]) -> None:
        """Run ``argv`` and wait until it answers a PING on ``port``."""
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{' '.join(argv[:2])} did not start")

    def ping(self) -> bool:
        try:
            return b"+PONG" in self.command("PING", timeout=0.5)
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def cluster_table(self) -> dict[str, Any]:
        """How a node's ``[cluster]`` reaches this Redis."""
        return {"redis_url": self.url}

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """One raw command (inline protocol), for inspecting keys in tests."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
            conn = raw
            if self.tls is not None:
                context = ssl.create_default_context(cafile=str(self.tls[0]))
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            line = " ".join(args) + "\r\n"
            if self.password:
                line = f"AUTH {self.password}\r\n" + line
            conn.sendall(line.encode())
            reply = conn.recv(65536)
            if self.password and reply == b"+OK\r\n":
                reply = conn.recv(65536)  # the answer to the command itself
            return reply.removeprefix(b"+OK\r\n") if self.password else reply


def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A redis-server on a free port for the duration of a fixture (killed after)."""
    server = RedisServer(free_port(), workdir)
    server.start()
    yield server
    server.kill()


class RedisTopology(Protocol):
    """What the cluster tests ask of the Redis they run on: one server
    (:class:`RedisServer`), a Sentinel deployment (tests/support/sentinel.py) or a Redis
    Cluster (tests/support/redis_cluster.py)."""

    @property
    def url(self) -> str: ...

    def command(self, *args: str, timeout: float = 2.0) -> bytes: ...

    def cluster_table(self) -> dict[str, Any]: ...


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cluster_config(
    redis: RedisTopology,
    lease: float = 3.0,
    webhook_delay: float = 0,
    prefix: str = "test",
    **app_settings: Any,
) -> str:
    """A node of the cluster on ``redis`` (key prefix ``test``) serving app 1, with
    client events and ``app_settings`` (``webhooks=[...]``, say)."""
    return build_config(
        app(client_events=True, webhook_delay=webhook_delay, **app_settings),
        cluster={
            "adapter": "redis",
            **redis.cluster_table(),
            "prefix": prefix,
            "node_lease": lease,
        },
    )


def api(node: RunningServer) -> pusher.Pusher:
    return python_sdk(node)


async def connect(node: RunningServer) -> tuple[ClientConnection, str]:
    ws = await ws_connect(node.ws())
    return ws, await established(ws)


def whole(node: RunningServer) -> bool:
    """The node counts the whole cluster again after an outage (every node it knew is
    back): its state queries answer (they say 503 until then)."""
    try:
        api(node).channels_info()
    except pusher.errors.PusherBadStatus:
        return False
    return True


def ready(node: RunningServer) -> int:
    try:
        with urllib.request.urlopen(node.http + "/ready", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
