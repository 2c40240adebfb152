"""A measured model of how far one Redis and a 3-shard Redis Cluster carry a Clarion cluster.

Runs many lightweight simulated nodes in this one process: each is the real Redis part of
a node (its own RedisLink with its own connections, broker, channel state, lease and
connection-count exchange), without WebSocket servers. Against a standalone redis-server
and against a 3-master Redis Cluster (no replicas: the model counts Clarion's load, not
replication), each started here on free ports, it measures from Redis's own counters
(INFO commandstats and CPU of every master):

* at rest: commands and Redis CPU per node per second (leases, connection counts, health
  pings, the cluster's subscription checks);
* per subscribe: a socket joining a new channel (the join script and the node's
  SUBSCRIBE/SSUBSCRIBE);
* per publish: one HTTP-style publish (confirmed) on a channel every node listens to.

From those it derives where each topology saturates (one Redis core per master: rate =
1 / CPU seconds per operation on the busiest master). Redis, the nodes and this script
share the machine: quote the figures with that in mind.

    .venv/bin/python bench/scale_model.py                     # 50 nodes, both topologies
    .venv/bin/python bench/scale_model.py --nodes 20 --topology cluster --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from clarion.cluster.interfaces import BrokerUnavailable
from clarion.cluster.redis import RedisBroker, RedisLink, RedisState
from clarion.cluster.redis.sharded import ShardedBroker, ShardedMembership

APP = "1"


def _port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = random.randrange(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _command(port: int, *args: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while not data.endswith(b"\r\n") or (data[:1] == b"$" and data.count(b"\r\n") < 2):
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")


class Redis:
    """redis-server processes: one standalone, or three cluster masters."""

    def __init__(self, cluster: bool, workdir: Path) -> None:
        self.cluster = cluster
        self.ports = [_port_pair() for _ in range(3 if cluster else 1)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            directory = workdir / str(port)
            directory.mkdir(parents=True)
            options = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            options += ["--appendonly", "no", "--dir", str(directory)]
            if cluster:
                options += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            self.processes.append(
                subprocess.Popen(
                    [shutil.which("redis-server") or "redis-server", *options],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait(lambda port=port: "PONG" in _command(port, "PING"))
        if cluster:
            subprocess.run(
                ["redis-cli", "--cluster", "create", *self.seeds, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            self._wait(
                lambda: all(
                    "cluster_state:ok" in _command(p, "CLUSTER", "INFO") for p in self.ports
                )
            )

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @staticmethod
    def _wait(check: Any) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("Redis did not start")

    @property
    def url(self) -> str:
        if self.cluster:
            return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def counters(self) -> list[tuple[int, float]]:
        """(commands processed, CPU seconds) of each master."""
        out = []
        for port in self.ports:
            info = dict(
                line.split(":", 1)
                for line in _command(port, "INFO", "all").splitlines()
                if ":" in line and not line.startswith("#")
            )
            cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            out.append((int(info["total_commands_processed"]), cpu))
        return out

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@dataclass
class Delta:
    """What the masters did during a phase, each master apart."""

    commands: list[float]
    cpu: list[float]

    def minus(self, rest: Delta, seconds: float) -> Delta:
        """This phase less what the cluster does at rest in that time."""
        return Delta(
            [c - r * seconds for c, r in zip(self.commands, rest.commands, strict=True)],
            [c - r * seconds for c, r in zip(self.cpu, rest.cpu, strict=True)],
        )

    def per(self, n: float) -> Delta:
        return Delta([c / n for c in self.commands], [c / n for c in self.cpu])


def delta(before: list[tuple[int, float]], after: list[tuple[int, float]]) -> Delta:
    return Delta(
        [float(a[0] - b[0]) for a, b in zip(after, before, strict=True)],
        [a[1] - b[1] for a, b in zip(after, before, strict=True)],
    )


class Node:
    """The Redis half of one Clarion node."""

    def __init__(self, url: str, cluster: bool, prefix: str) -> None:
        self.link = RedisLink(url, prefix, timeout=2.0, cluster=cluster)
        self.broker = ShardedBroker(self.link) if cluster else RedisBroker(self.link)
        membership = ShardedMembership if cluster else None
        self.state = (
            RedisState(self.link, 10.0, membership) if membership else RedisState(self.link, 10.0)
        )
        self.delivered = 0
        self.broker.bind(self._deliver)

    def _deliver(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        self.delivered += 1

    async def start(self) -> None:
        await self.link.connect()
        await self.broker.start()
        await self.state.start()
        self.state.share_connections(lambda: {APP: 100})

    async def stop(self) -> None:
        await self.state.stop()
        await self.broker.stop()
        await self.link.close()


async def measure(topology: str, nodes: int, rest: float, subs: int, pubs: int) -> dict[str, Any]:
    cluster = topology == "cluster"
    with tempfile.TemporaryDirectory() as workdir:
        redis = Redis(cluster, Path(workdir))
        try:
            fleet = [Node(redis.url, cluster, "scale") for _ in range(nodes)]
            for node in fleet:
                await node.start()
            await asyncio.sleep(2.0)  # leases taken, first exchanges done
            # At rest.
            before, cpu0 = redis.counters(), time.process_time()
            await asyncio.sleep(rest)
            at_rest = delta(before, redis.counters()).per(rest)  # per second
            nodes_cpu = (time.process_time() - cpu0) / rest / nodes
            # Subscribes: sockets joining new channels, spread over the nodes.
            before, started = redis.counters(), time.perf_counter()
            for index in range(subs):
                node = fleet[index % nodes]
                channel = f"sub-{index}"
                await node.state.join(APP, channel, f"{index}.1", None, 100)
                await node.broker.watch(APP, channel)
            seconds = time.perf_counter() - started
            per_sub = delta(before, redis.counters()).minus(at_rest, seconds).per(subs)
            # Publishes: every node listens to 8 channels; one node publishes, confirmed.
            channels = [f"pub-{i}" for i in range(8)]
            for node in fleet:
                for channel in channels:
                    await node.broker.watch(APP, channel)
            await asyncio.sleep(0.5)
            failed = 0
            before, started = redis.counters(), time.perf_counter()
            for index in range(pubs):
                ack = fleet[0].broker.publish(
                    APP, channels[index % 8], b'{"event":"e","data":"x"}', None, confirm=True
                )
                if ack is not None:
                    try:
                        await ack
                    except BrokerUnavailable:  # a 503: counted, not fatal to the run
                        failed += 1
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.5)  # deliveries still on their way
            seconds = time.perf_counter() - started
            per_pub = delta(before, redis.counters()).minus(at_rest, seconds).per(pubs)
            delivered = sum(node.delivered for node in fleet)
            for node in fleet:
                await node.stop()
        finally:
            redis.stop()
    return {
        "rest_commands_per_node_s": sum(at_rest.commands) / nodes,
        "rest_cpu_ms_per_node_s": sum(at_rest.cpu) * 1000 / nodes,
        "rest_busiest_cpu_ms_per_node_s": max(at_rest.cpu) * 1000 / nodes,
        "rest_node_cpu_ms_per_s": nodes_cpu * 1000,
        "sub_commands": sum(per_sub.commands),
        "sub_cpu_us": sum(per_sub.cpu) * 1e6,
        "pub_commands": sum(per_pub.commands),
        "pub_cpu_us": sum(per_pub.cpu) * 1e6,
        "pub_rate": pubs / elapsed,
        "delivered_per_pub": delivered / pubs,
        "pub_failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--topology", choices=["standalone", "cluster", "both"], default="both")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds measured at rest")
    parser.add_argument("--subscribes", type=int, default=2000)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    topologies = ["standalone", "cluster"] if args.topology == "both" else [args.topology]
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in topologies}
    for rep in range(args.reps):
        for topology in topologies:  # interleaved: both see the same machine load
            result = asyncio.run(
                measure(topology, args.nodes, args.rest, args.subscribes, args.publishes)
            )
            runs[topology].append(result)
            print(f"rep {rep + 1} {topology}: {result}", file=sys.stderr)
    print(f"{args.nodes} simulated nodes, medians of {args.reps} run(s), cpu {os.cpu_count()}")
    for topology, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        masters = 3 if topology == "cluster" else 1
        print(f"\n{topology} ({masters} master{'s' if masters > 1 else ''})")
        print(
            f"  at rest, per node: {med['rest_commands_per_node_s']:.1f} Redis commands/s, "
            f"Redis CPU {med['rest_cpu_ms_per_node_s']:.3f} ms/s (busiest master "
            f"{med['rest_busiest_cpu_ms_per_node_s']:.3f}), the node's own CPU "
            f"{med['rest_node_cpu_ms_per_s']:.2f} ms/s"
        )
        print(
            f"  per subscribe: {med['sub_commands']:.2f} commands, "
            f"Redis CPU {med['sub_cpu_us']:.1f} us"
        )
        print(
            f"  per publish heard by {med['delivered_per_pub']:.0f} nodes: "
            f"Redis CPU {med['pub_cpu_us']:.1f} us "
            f"({med['pub_rate']:.0f} confirmed publishes/s from one node, one at a time)"
        )
        # One Redis core per master. One app's subscribes and one channel's publishes go
        # through one master; many apps and channels spread over all of them.
        print(
            f"  saturation (one core per master): subscribes "
            f"{1e6 / med['sub_cpu_us']:,.0f}/s per app, {masters * 1e6 / med['sub_cpu_us']:,.0f}"
            f"/s over many apps; publishes to {args.nodes} nodes "
            f"{1e6 / med['pub_cpu_us']:,.0f}/s per channel, "
            f"{masters * 1e6 / med['pub_cpu_us']:,.0f}/s over many channels"
        )


if __name__ == "__main__":
    main()
