"""A Redis Sentinel deployment of the tests' own: a primary, its replica and three
sentinels (``redis-server <conf> --sentinel``), each on a free port, with passwords (the
sentinels' differs from the master's) and timings low enough that a failover after a
kill -9 of the master takes a few seconds.

:class:`SentinelTopology` answers like a :class:`~tests.support.cluster.RedisServer` for
what the cluster tests ask of one (``url``, ``command``): on the master of the moment.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import RedisServer, free_port

MASTER = "mymaster"
MASTER_PASSWORD = "master-secret"
SENTINEL_PASSWORD = "sentinel-secret"  # not the master's: both must be configured
DOWN_AFTER_MS = 1000  # how long a silent master takes to be seen down
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class SentinelServer(RedisServer):
    """One sentinel: ``redis-server <its own config file> --sentinel``."""

    master_port: int = 0

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None  # the primary's start() skipped or failed already
        # Each sentinel rewrites its own config file (what it learns): one file each.
        conf = self.workdir / f"sentinel-{self.port}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.workdir}",
                    f"requirepass {SENTINEL_PASSWORD}",
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2",
                    f"sentinel auth-pass {MASTER} {MASTER_PASSWORD}",
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER} 1",
                    "",
                ]
            )
        )
        self.launch([binary, str(conf), "--sentinel"])

    def master(self) -> dict[str, str]:
        """What this sentinel says of the master (SENTINEL MASTER), field by field."""
        reply = self.command("SENTINEL", "MASTER", MASTER).decode()
        lines = [line for line in reply.split("\r\n") if line and line[0] not in "*$"]
        return dict(zip(lines[::2], lines[1::2], strict=False))


@dataclass
class SentinelTopology:
    """A primary, a replica and three sentinels watching them as ``mymaster``."""

    workdir: Path
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelServer] = field(default_factory=list)

    def start(self) -> None:
        primary_port = free_port()
        primary = RedisServer(
            primary_port,
            self._dir("primary"),
            password=MASTER_PASSWORD,
            # Once demoted (restarted after a failover), it must reach the new master.
            extra=("--masterauth", MASTER_PASSWORD),
        )
        primary.start()  # skips (or fails, in CI) without redis-server
        self.servers.append(primary)
        replica = RedisServer(
            free_port(),
            self._dir("replica"),
            password=MASTER_PASSWORD,
            extra=(
                "--masterauth",
                MASTER_PASSWORD,
                "--replicaof",
                "127.0.0.1",
                str(primary_port),
            ),
        )
        replica.start()
        self.servers.append(replica)
        self._until(lambda: b"master_link_status:up" in replica.command("INFO", "replication"))
        for _ in range(3):
            sentinel = SentinelServer(
                free_port(),
                self.workdir,
                password=SENTINEL_PASSWORD,
                master_port=primary_port,
            )
            sentinel.start()
            self.sentinels.append(sentinel)
        # A failover needs each sentinel to know the replica and the other sentinels.
        for sentinel in self.sentinels:
            self._until(
                lambda s=sentinel: (
                    (state := s.master()).get("num-slaves") == "1"
                    and state.get("num-other-sentinels") == "2"
                ),
                timeout=30,
            )

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(exist_ok=True)
        return path

    @staticmethod
    def _until(check: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel topology did not settle")
            time.sleep(0.05)

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            except OSError:
                continue
            return int(reply.split(b"\r\n")[-2])
        raise RuntimeError("no sentinel answers")

    @property
    def master(self) -> RedisServer:
        port = self.master_port()
        return next(server for server in self.servers if server.port == port)

    def kill_master(self) -> int:
        """kill -9 the master; its port."""
        master = self.master
        master.kill()
        return master.port

    def wait_failover(self, old_port: int, timeout: float = 20) -> RedisServer:
        """The new master, once every sentinel names one other than ``old_port`` and it
        acts as a master."""

        def promoted() -> bool:
            try:
                ports = {self.master_port() for _ in self.sentinels}
                if ports == {old_port}:
                    return False
                return b"role:master" in self.master.command("INFO", "replication")
            except (OSError, StopIteration, ValueError, IndexError):
                return False

        self._until(promoted, timeout)
        return self.master

    # What the cluster tests ask of a RedisServer, on the master of the moment.
    @property
    def url(self) -> str:
        """The master of the moment, directly (for a test's own client)."""
        return self.master.url

    def cluster_table(self) -> dict[str, Any]:
        """A node finds the master through the sentinels; the URL gives its password."""
        return {
            "redis_url": f"redis://:{MASTER_PASSWORD}@sentinel-named/0",
            "sentinels": [
                f"redis://:{SENTINEL_PASSWORD}@127.0.0.1:{s.port}" for s in self.sentinels
            ],
            "sentinel_master": MASTER,
        }

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        return self.master.command(*args, timeout=timeout)

    def kill(self) -> None:
        pytest.skip(
            "stops the one Redis and starts it empty: a standalone-topology test "
            "(a failover is tests/cluster/test_sentinel.py's)"
        )

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.kill()
