"""The seeds of a Redis Cluster URL (topology.py)."""

from __future__ import annotations

import pytest

from clarion.cluster.redis.topology import node_url, seeds


def test_seeds_keep_credentials_database_and_options_on_the_first_url() -> None:
    first, found = seeds("rediss://user:pw@h1:7000,h2:7001,10.0.0.3:7002/0?ssl_ca_certs=/ca")
    assert first == "rediss://user:pw@h1:7000/0?ssl_ca_certs=/ca"
    assert found == [("h1", 7000), ("h2", 7001), ("10.0.0.3", 7002)]
    assert seeds("redis://h1:7000")[1] == [("h1", 7000)]
    assert seeds("redis://h1:7000?a=b")[0] == "redis://h1:7000?a=b"


def test_a_node_url_carries_the_clusters_credentials() -> None:
    url = "redis://:pw@h1:7000,h2:7001/0"
    assert node_url(url, "10.1.1.1", 7005) == "redis://:pw@10.1.1.1:7005/0"
    assert node_url(url, "::1", 7005) == "redis://:pw@[::1]:7005/0"


@pytest.mark.parametrize(
    "url", ["unix:///tmp/r.sock", "redis://h1", "redis://h1:7000,h2", "redis://:x@/0", "h1:7000"]
)
def test_a_url_without_host_port_seeds_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        seeds(url)
