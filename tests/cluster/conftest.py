"""A real redis-server per test, started (and killable) by the tests themselves, and two
nodes on it.

``CLARION_TEST_TOPOLOGY=sentinel`` runs the same tests on a Redis Sentinel deployment
instead (a primary, a replica, three sentinels: tests/support/sentinel.py), started once
for the session and emptied before each test; the nodes find the master through the
sentinels. Tests that stop the one Redis and start it empty are skipped there, saying so
(the Sentinel failover has its own tests, test_sentinel.py).

``CLARION_TEST_TOPOLOGY=cluster`` runs the same suite on a Redis Cluster instead (three
masters, three replicas; one for the session, emptied before each test), through the
``redis-cluster`` adapter. A test that drives its redis-server process itself (kills
and restarts it, sends it raw commands) is marked ``standalone_redis`` and does not run
there: the Redis Cluster's own failover is tested in test_redis_cluster.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RedisTopology, cluster_config, running_redis
from tests.support.redis_cluster import RedisCluster, running_cluster
from tests.support.sentinel import SentinelTopology
from tests.support.server import RunningServer

TOPOLOGIES = ("standalone", "sentinel", "cluster")
TOPOLOGY = os.environ.get("CLARION_TEST_TOPOLOGY", "standalone")
if TOPOLOGY not in TOPOLOGIES:
    raise pytest.UsageError(f"CLARION_TEST_TOPOLOGY must be one of {TOPOLOGIES}: {TOPOLOGY!r}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "standalone_redis: drives its redis-server process itself (not on a cluster)"
    )


@pytest.fixture(scope="session")
def shared_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    topology = SentinelTopology(tmp_path_factory.mktemp("sentinel"))
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    yield from running_cluster(tmp_path_factory.mktemp("session-cluster"))


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisTopology]:
    if TOPOLOGY == "sentinel":
        topology: SentinelTopology = request.getfixturevalue("shared_sentinel")
        topology.command("FLUSHALL")  # what an earlier test's nodes left
        yield topology
        return
    if TOPOLOGY == "cluster":
        if request.node.get_closest_marker("standalone_redis") is not None:
            pytest.skip("drives one redis-server process itself: standalone topology only")
        cluster: RedisCluster = request.getfixturevalue("session_cluster")
        cluster.flush()
        yield cluster
        return
    yield from running_redis(tmp_path)


@pytest.fixture
def two_nodes(
    redis_server: RedisTopology, make_server: Callable[..., RunningServer]
) -> tuple[RunningServer, RunningServer]:
    config = cluster_config(redis_server)
    return make_server(config), make_server(config)
