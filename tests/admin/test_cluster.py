"""The console of a cluster: two real nodes on a real redis-server. A console open on
one node shows the other node's rows with that node's name, only while it is open, and
the overview lists the nodes from the cluster's membership data. The rows also cross
nodes on a six-process Redis Cluster, over sharded pub/sub."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import TOKEN, Admin, console_of
from tests.admin.test_http import Stream, sign_in, signed_in
from tests.support.browser import TIMEOUT_MS
from tests.support.cluster import RedisServer, api, connect, running_redis
from tests.support.config import app, build_config
from tests.support.polling import until
from tests.support.pusherjs import Driver
from tests.support.raw import recv_json
from tests.support.redis_cluster import RedisCluster, running_cluster
from tests.support.server import RunningServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def two_consoles(
    make_server: Callable[..., RunningServer], cluster: dict[str, object]
) -> tuple[Admin, Admin]:
    """Two nodes with their admin console, on the Redis ``cluster`` names."""
    config = build_config(
        app(client_events=True),
        server={"host": "127.0.0.1"},
        cluster={**cluster, "prefix": "test", "node_lease": 3.0},
        admin={"host": "127.0.0.1", "port": 0, "token": TOKEN},
    )
    return console_of(make_server(config)), console_of(make_server(config))


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """Six processes (three masters, three replicas), for the test of sharded pub/sub."""
    yield from running_cluster(tmp_path / "redis-cluster")


@pytest.fixture
def consoles(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> tuple[Admin, Admin]:
    return two_consoles(make_server, {"adapter": "redis", "redis_url": redis_server.url})


def nodes(console: Admin) -> list[dict[str, object]]:
    with signed_in(console) as http:
        overview = http.get("/admin/api/overview").json()
    assert overview["cluster"] is True
    found: list[dict[str, object]] = overview["nodes"]
    return found


def row_subscribers(redis_server: RedisServer, sharded: bool = False) -> int:
    """Subscribers of app 1's rows channel on ``redis_server`` (``PUBSUB NUMSUB``, or
    ``SHARDNUMSUB`` on the master of its slot, answers ``*2 name n``)."""
    numsub = "SHARDNUMSUB" if sharded else "NUMSUB"
    reply = redis_server.command("PUBSUB", numsub, "test:tap:1")
    return int(reply.rsplit(b":", 1)[1])


def test_the_overview_lists_the_nodes_of_the_cluster(consoles: tuple[Admin, Admin]) -> None:
    a, b = consoles
    until(lambda: len(nodes(a)) == 2, what="two nodes in the overview")
    listed = nodes(a)
    [here] = [n for n in listed if n["this"]]
    [there] = [n for n in listed if not n["this"]]
    assert here["name"] != there["name"]
    assert next(n for n in nodes(b) if n["this"])["name"] == there["name"]
    for node in listed:
        assert isinstance(node["up_since"], float)
        age = node["heartbeat_age"]
        assert isinstance(age, float) and 0 <= age < 3.0  # within the lease

    async def two_on_b() -> None:
        sockets = [await connect(b.server), await connect(b.server)]

        def counted() -> bool:
            there_now = next(n for n in nodes(a) if n["name"] == there["name"])
            return there_now["connections"] == 2

        until(counted, what="node b's two connections, seen from node a")
        for ws, _ in sockets:
            await ws.close()

    asyncio.run(two_on_b())


def test_a_console_shows_the_rows_of_every_node_with_its_name(
    consoles: tuple[Admin, Admin], redis_server: RedisServer
) -> None:
    rows_of_both_nodes(consoles, lambda: row_subscribers(redis_server))


def test_on_a_redis_cluster_a_console_shows_the_rows_of_every_node(
    redis_cluster: RedisCluster, make_server: Callable[..., RunningServer]
) -> None:
    """The same over sharded pub/sub: announcements and rows SPUBLISHed, SSUBSCRIBEd on
    the masters of their slots."""
    consoles = two_consoles(make_server, redis_cluster.cluster_table())
    master = redis_cluster.master_of("test:tap:1")
    rows_of_both_nodes(consoles, lambda: row_subscribers(master, sharded=True))


def rows_of_both_nodes(consoles: tuple[Admin, Admin], subscribers: Callable[[], int]) -> None:
    """A console on node a shows node b's rows with b's name, and a's own with a's; the
    rows channel has a subscriber (``subscribers()``) only while the console is open."""
    a, b = consoles
    b_name = next(n["name"] for n in nodes(b) if n["this"])
    a_name = next(n["name"] for n in nodes(a) if n["this"])
    http = sign_in(a)
    rows = Stream(http, "1")
    try:
        # The console's subscription exists only while it is open.
        until(lambda: subscribers() == 1, what="node a's subscription to rows")

        async def on_b() -> None:
            ws, socket_id = await connect(b.server)
            row = rows.wait(type="Connection", socket_id=socket_id)
            assert row["node"] == b_name
            await ws.send('{"event":"pusher:subscribe","data":{"channel":"news"}}')
            assert (await recv_json(ws))["event"] == "pusher_internal:subscription_succeeded"
            assert rows.wait(type="Subscribed", channel="news")["node"] == b_name
            api(b.server).trigger("news", "from-b", {"n": 1})
            assert rows.wait(type="API Message", event="from-b")["node"] == b_name
            api(a.server).trigger("news", "from-a", {"n": 2})
            assert rows.wait(type="API Message", event="from-a")["node"] == a_name
            await ws.close()
            rows.wait(type="Disconnection", socket_id=socket_id)

        asyncio.run(on_b())
    finally:
        rows.close()
        http.close()

    until(lambda: subscribers() == 0, what="no subscription once closed")


def test_in_the_browser_rows_of_another_node_show_its_name(
    consoles: tuple[Admin, Admin], browser: Any, make_driver: Callable[..., Driver]
) -> None:
    from playwright.sync_api import expect

    a, b = consoles
    b_name = next(n["name"] for n in nodes(b) if n["this"])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{a.base}/admin/apps/1?token={a.token}")
        log = page.get_by_role("log", name="Debug console")
        expect(log).to_have_attribute("data-stream", "open")
        expect(page.locator("body")).to_have_class(re.compile(r"\bcluster\b"))

        # pusher-js on node b (Playwright's own loop runs in this thread: no asyncio.run).
        socket_id = make_driver(b.server).client("on-b").socket_id
        assert socket_id
        row = log.locator(".row", has_text=socket_id).filter(has_text="Connection")
        expect(row.locator("span.node")).to_have_text(b_name)
        expect(row.locator("span.node")).to_be_visible()
        page.goto(f"{a.base}/admin/")
        expect(page.locator("#nodes-table tbody tr")).to_have_count(2)
        expect(page.locator("#nodes-note")).to_have_text("2 nodes in the cluster")
        expect(page.locator("#nodes-table")).to_contain_text(b_name)
    finally:
        context.close()
