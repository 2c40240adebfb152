"""A real redis-server per test, started (and killable) by the tests themselves, and two
nodes on it.

``CLARION_REDIS_TOPOLOGY=cluster`` runs the same suite on a Redis Cluster instead (three
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

from tests.support.cluster import RedisServer, cluster_config, free_port
from tests.support.redis_cluster import RedisCluster
from tests.support.server import RunningServer

TOPOLOGY = os.environ.get("CLARION_REDIS_TOPOLOGY", "standalone")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "standalone_redis: drives its redis-server process itself (not on a cluster)"
    )


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("session-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


@pytest.fixture
def redis_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RedisServer | RedisCluster]:
    if TOPOLOGY == "cluster":
        if request.node.get_closest_marker("standalone_redis") is not None:
            pytest.skip("drives one redis-server process itself: standalone topology only")
        cluster: RedisCluster = request.getfixturevalue("session_cluster")
        cluster.flush()
        yield cluster
        return
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def two_nodes(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> tuple[RunningServer, RunningServer]:
    config = cluster_config(redis_server)
    return make_server(config), make_server(config)
