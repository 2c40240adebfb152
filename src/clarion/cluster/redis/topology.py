"""The Redis Cluster client of the ``redis-cluster`` adapter: built from a list of seed
nodes, and watched for changes of topology.

A change of which master serves a slot (a failover, a slot migration) is reported as a
failure of the link (``on_change``), as when Redis goes away: a subscriber whose shard
changed hands is not listening on the new master until it has subscribed there again,
so a publish that reaches the new master meanwhile must not be answered 200 (see
:mod:`.sharded`). redis-py learns of a change either by reading the slots again or
from a MOVED reply; both end in an ``AsyncAfterSlotsCacheRefreshEvent``, heard here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.event import AsyncAfterSlotsCacheRefreshEvent, AsyncEventListenerInterface


def seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis://[user:password@]h1:7000,h2:7001[/0][?query]`` as the URL of the first
    seed (what redis-py parses: credentials, TLS, query options) and every seed's
    (host, port). Raises ValueError for a URL that names no seed."""
    first, found, _ = _parse(url)
    return first, found


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (the cluster's, with its credentials and options) naming one node."""
    return _parse(url)[2](host, port)


def _parse(url: str) -> tuple[str, list[tuple[str, int]], Callable[[str, int], str]]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError("a Redis Cluster URL starts with redis:// or rediss://")
    netloc, slash, tail = rest.partition("/")
    if not slash:
        netloc, qmark, query = netloc.partition("?")
        tail = f"?{query}" if qmark else ""
    else:
        tail = "/" + tail
    auth, at, hosts = netloc.rpartition("@")
    found: list[tuple[str, int]] = []
    for seed in hosts.split(","):
        host, colon, port = seed.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster seed is host:port, got {seed.strip()!r}")
        found.append((host.strip("[]"), int(port)))

    def one(host: str, port: int) -> str:
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return f"{scheme}://{auth}{at}{quote(host, safe='.:[]')}:{port}{tail}"

    return one(*found[0]), found, one


def cluster_client(url: str, client_name: str) -> RedisCluster:
    """A RedisCluster on the seeds of ``url`` (not connected yet)."""
    first, all_seeds = seeds(url)
    return RedisCluster.from_url(
        first,
        startup_nodes=[ClusterNode(host, port) for host, port in all_seeds[1:]],
        # Per master; a burst of subscribes, each a script call, waits for a free one.
        max_connections=64,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
        client_name=client_name,
    )


def owners(client: RedisCluster) -> dict[int, str]:
    """slot -> the name (host:port) of the master redis-py sends it to."""
    return {slot: nodes[0].name for slot, nodes in client.nodes_manager.slots_cache.items()}


class _TopologyWatch(AsyncEventListenerInterface):
    """Hears redis-py refresh its slot map (a new read of the slots, or a MOVED)."""

    def __init__(self, client: RedisCluster, on_change: Callable[[str], None]) -> None:
        self.client = client
        self.on_change = on_change
        self.last: dict[int, str] = {}

    async def listen(self, event: object) -> None:
        now = owners(self.client)
        if self.last and now != self.last:
            self.on_change("the Redis Cluster's slots changed masters")
        self.last = now


def watch_topology(client: RedisCluster, on_change: Callable[[str], None]) -> None:
    """Call ``on_change(why)`` whenever ``client`` learns that a slot changed masters."""
    dispatcher: Any = client._event_dispatcher
    dispatcher.register_listeners(
        {AsyncAfterSlotsCacheRefreshEvent: [_TopologyWatch(client, on_change)]}
    )


async def refresh(client: RedisCluster) -> None:
    """Read the topology again and drop idle connections (after an outage)."""
    await client.nodes_manager.initialize()
