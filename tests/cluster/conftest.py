"""A real redis-server per test, started (and killable) by the tests themselves, and two
nodes on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RedisServer, cluster_config, running_redis
from tests.support.server import RunningServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


@pytest.fixture
def two_nodes(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> tuple[RunningServer, RunningServer]:
    config = cluster_config(redis_server)
    return make_server(config), make_server(config)
