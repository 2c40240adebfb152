"""A six-process Redis Cluster (three masters, three replicas) on free ports, started
and killed by the tests themselves, for the ``redis-cluster`` adapter."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import RedisServer

NODE_TIMEOUT_MS = 1000  # cluster-node-timeout: a dead master's replica takes over in ~2 s


def _ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below the
    kernel's ephemeral range: a port merely free when probed can be taken by any outgoing
    connection before redis-server binds it (seen: the bus port, "Address already in
    use")."""
    top = max(_ephemeral_start() - 10000, 12000)
    for _ in range(200):
        port = random.randrange(10000, top)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} (Debian package redis-server / redis-tools) is not on the PATH"
        # CI sets CLARION_REQUIRE_REDIS=1: there a missing binary is a failure.
        if os.environ.get("CLARION_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class RedisClusterNode(RedisServer):
    """One process of the cluster (cluster mode on, its own nodes.conf)."""

    def _options(self) -> list[str]:
        return [
            *super()._options(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{self.port}.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica syncs at once (a replica not yet synced never takes over).
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]

    def info(self, section: str) -> dict[str, str]:
        reply = self.command("CLUSTER", section.upper()).decode(errors="replace")
        return dict(
            line.split(":", 1) for line in reply.splitlines() if ":" in line and "$" not in line
        )

    def synced(self) -> bool:
        """A master, or a replica whose link to its master is up (it may take over)."""
        try:
            reply = self.command("INFO", "replication").decode(errors="replace")
        except OSError:
            return False
        return "role:master" in reply or "master_link_status:up" in reply

    def role(self) -> str:
        """ "master" or "slave", as this process sees itself."""
        for line in self.command("ROLE").decode(errors="replace").splitlines():
            if line in ("master", "slave"):
                return line
        return "unknown"


@dataclass
class RedisCluster:
    """Three masters and three replicas, each on a free port of 127.0.0.1."""

    workdir: Path
    nodes: list[RedisClusterNode] = field(default_factory=list)

    def cluster_table(self) -> dict[str, Any]:
        """How a node's ``[cluster]`` reaches this Redis Cluster."""
        return {"adapter": "redis-cluster", "redis_url": self.url}

    @property
    def url(self) -> str:
        """The seeds the adapter is given: two of the masters."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"redis://{seeds}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = [_cluster_port() for _ in range(6)]
        # A directory each: a replica's full sync writes an RDB file there.
        self.nodes = [RedisClusterNode(port, self.workdir / str(port)) for port in ports]
        for node in self.nodes:
            node.workdir.mkdir()
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live process says the cluster is ok with three masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [node for node in self.nodes if node.process is not None]
            try:
                infos = [node.info("info") for node in live]
            except OSError:
                infos = []
            if (
                infos
                and all(
                    i.get("cluster_state") == "ok" and i.get("cluster_size") == "3" for i in infos
                )
                and all(node.synced() for node in live)
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not become ok")

    def flush(self) -> None:
        """Empty every master (between two tests sharing the cluster)."""
        for node in self.masters():
            node.command("FLUSHALL")

    def masters(self) -> list[RedisClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.role() == "master"]

    def master_of(self, key: str) -> RedisClusterNode:
        """The live master serving ``key``'s slot."""
        slot = int(self.nodes[0].command("CLUSTER", "KEYSLOT", key).strip(b":\r\n"))
        for node in self.masters():
            reply = node.command("CLUSTER", "COUNTKEYSINSLOT", str(slot))
            if not reply.startswith(b"-"):
                # Only the owner answers without MOVED for a GET on the slot.
                probe = node.command("GET", key)
                if not probe.startswith(b"-MOVED"):
                    return node
        raise RuntimeError(f"no live master serves {key!r}")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def running_cluster(workdir: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of six processes for the duration of a fixture (killed after,
    also when it failed to form)."""
    cluster = RedisCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()
