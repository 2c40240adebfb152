"""SentinelEndpoint: the master's options from redis_url, each sentinel's from its own
entry, and telling a moved master. No Redis or sentinel is contacted: the sentinels'
answer is stubbed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from clarion.cluster.redis.link import POOL_OPTIONS
from clarion.cluster.redis.sentinel import BlockingSentinelPool, MasterMoved, SentinelEndpoint

SENTINELS = ["10.0.0.1:26379", "redis://:sentinel-pw@10.0.0.2:26380"]


def _endpoint(url: str = "redis://:master-pw@ignored:1/3") -> SentinelEndpoint:
    return SentinelEndpoint(url, SENTINELS, "mymaster")


def test_the_master_gets_redis_url_options_and_each_sentinel_its_own() -> None:
    endpoint = _endpoint()
    pool = endpoint.pool(dict(POOL_OPTIONS))
    assert isinstance(pool, BlockingSentinelPool)
    assert pool.max_connections == 64 and pool.connection_class is SentinelManagedConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("master-pw", 3)
    assert "host" not in kwargs  # the sentinels say where the master is
    sentinels = [s.connection_pool.connection_kwargs for s in endpoint.sentinel.sentinels]
    assert [(s["host"], s["port"], s.get("password")) for s in sentinels] == [
        ("10.0.0.1", 26379, None),
        ("10.0.0.2", 26380, "sentinel-pw"),
    ]
    assert "master-pw" not in endpoint.describe() and "sentinel-pw" not in endpoint.describe()


def test_a_tls_master_is_reached_over_tls() -> None:
    pool = _endpoint("rediss://ignored/0?ssl_ca_certs=/ca.pem").pool(dict(POOL_OPTIONS))
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


def test_a_master_moved_is_told_and_a_connection_to_the_old_one_is_not_current() -> None:
    async def main() -> None:
        endpoint = _endpoint()
        pool = endpoint.pool(dict(POOL_OPTIONS))
        assert await endpoint.moved() is None  # not connected yet: nothing to compare
        pool.master_address = ("10.0.1.1", 6379)
        answer: object = ("10.0.1.1", 6379)

        async def discover_master(name: str) -> object:
            assert name == "mymaster"
            if isinstance(answer, Exception):
                raise answer
            return answer

        endpoint.sentinel.discover_master = discover_master
        assert await endpoint.moved() is None
        answer = MasterNotFoundError("failover under way")
        assert await endpoint.moved() is None  # the health ping tells whether it answers
        answer = ("10.0.1.2", 6379)
        assert await endpoint.moved() == (
            "the sentinels moved master 'mymaster' from 10.0.1.1:6379 to 10.0.1.2:6379"
        )
        old = SimpleNamespace(host="10.0.1.1", port=6379)
        assert endpoint.current(old) and not endpoint.current(None)
        pool.master_address = ("10.0.1.2", 6379)  # what the next connection found
        assert not endpoint.current(old)
        await endpoint.close()

    asyncio.run(main())


def test_new_connections_stay_on_the_agreed_master_until_the_link_follows() -> None:
    """redis-py would move quietly with the next connection made: a move is an outage."""

    async def main() -> None:
        endpoint = _endpoint()
        pool = endpoint.pool(dict(POOL_OPTIONS))
        named = ("10.0.1.1", 6379)

        async def discover_master(name: str) -> tuple[str, int]:
            return named

        endpoint.sentinel.discover_master = discover_master
        assert await pool.get_master_address() == named  # the first one is agreed on
        named = ("10.0.1.2", 6379)
        with pytest.raises(MasterMoved, match=r"from 10\.0\.1\.1:6379 to 10\.0\.1\.2:6379"):
            await pool.get_master_address()
        assert pool.master_address == ("10.0.1.1", 6379)
        endpoint.follow()  # the link reconnects after the outage
        assert await pool.get_master_address() == named == pool.master_address
        await endpoint.close()

    asyncio.run(main())
