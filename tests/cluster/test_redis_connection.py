"""The one Redis configuration every subsystem shares, with a password and over TLS.

``redis_url`` carries both: ``redis://:password@host:port/db`` and
``rediss://host:port/db?ssl_ca_certs=/path/ca.pem`` (redis-py's URL form, query
arguments passed to its connection). Two nodes on such a Redis still act as one server,
and the password never reaches the logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.support.certificates import self_signed_certificate
from tests.support.cluster import RedisServer, api, cluster_config, connect, free_port, ready
from tests.support.raw import recv_json, subscribe
from tests.support.server import RunningServer

PASSWORD = "n0t-in-the-logs"


def _two_nodes_deliver(a: RunningServer, b: RunningServer) -> None:
    async def main() -> None:
        on_b, _ = await connect(b)
        await subscribe(on_b, "guarded")
        api(a).trigger("guarded", "crossed", {"n": 1})
        assert (await recv_json(on_b))["event"] == "crossed"
        assert api(a).channel_info("guarded", ["subscription_count"])["subscription_count"] == 1
        await on_b.close()

    asyncio.run(main())
    assert ready(a) == 200 and ready(b) == 200


def test_a_password_protected_redis(
    tmp_path: Path, make_server: Callable[..., RunningServer]
) -> None:
    redis = RedisServer(free_port(), tmp_path, password=PASSWORD)
    redis.start()
    try:
        assert b"NOAUTH" in RedisServer(redis.port, tmp_path).command("PING")
        config = cluster_config(redis)
        a, b = make_server(config), make_server(config)
        _two_nodes_deliver(a, b)
        assert redis.command("ZCARD", "test:nodes") == b":2\r\n"
        for node in (a, b):
            assert not [line for line in node.output if PASSWORD in line]
            assert any("connected to Redis" in line for line in node.output)
    finally:
        redis.kill()


def test_redis_over_tls(tmp_path: Path, make_server: Callable[..., RunningServer]) -> None:
    redis = RedisServer(free_port(), tmp_path, tls=self_signed_certificate(tmp_path, "redis"))
    redis.start()
    try:
        assert redis.url.startswith("rediss://")
        config = cluster_config(redis)
        a, b = make_server(config), make_server(config)
        _two_nodes_deliver(a, b)
        assert redis.command("ZCARD", "test:nodes") == b":2\r\n"
    finally:
        redis.kill()
