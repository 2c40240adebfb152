"""The composition root: a node is complete when built (nothing left for start() to fill
in), its parts are the same objects everywhere, and the app store's apps merge over the
static ones. No socket is opened."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

from clarion.cluster.memory import MemoryBroker, MemoryRateLimiter, MemoryState
from clarion.config import AppConfig, ClusterSettings, ServerSettings, Settings
from clarion.server.http_api import HttpApi
from clarion.server.node import Backend, Node, RedisBackend, StoreEmptied, open_backend
from clarion.stores import AppStore

STATIC = AppConfig(id="1", key="key-1", secret="secret-1")


def _settings(**server: Any) -> Settings:
    return Settings(server=ServerSettings(**server), apps=[STATIC])


def test_a_memory_node_is_fully_built() -> None:
    node = Node(_settings())
    ctx = node.ctx
    assert isinstance(ctx.api, HttpApi)
    assert ctx.api is node.api
    assert ctx.hub is node.hub is node.api.hub
    assert ctx.registry is node.registry is node.api.registry
    assert node.hub.state is node.api.state is node.backend.state
    assert node.hub.broker is node.backend.broker
    assert ctx.eager  # the memory state never waits: handlers run without a task
    assert isinstance(node.backend.broker, MemoryBroker)
    assert isinstance(node.backend.state, MemoryState)
    assert isinstance(node.api.limiter, MemoryRateLimiter)
    assert node.registry.by_id("1") is not None


def test_socket_ids_are_unique_and_share_the_node_prefix() -> None:
    new_id = Node(_settings()).ctx.new_socket_id
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert len({socket_id.split(".")[0] for socket_id in ids}) == 1


def test_ready_until_draining() -> None:
    node = Node(_settings())
    assert node.ready()
    assert node.api.is_ready()
    node.ctx.accepting = False
    assert not node.api.is_ready()


def test_ready_says_no_over_the_open_files_threshold() -> None:
    assert not Node(_settings(ready_max_open_files=0)).ready()


def test_the_memory_backend_has_no_other_nodes() -> None:
    backend = open_backend(ClusterSettings())
    assert type(backend) is Backend
    assert backend.jobs is None and backend.marks is None

    async def main() -> None:
        tasks_before = asyncio.all_tasks()
        await backend.open()
        backend.state.on_reaped(_never_called)
        await backend.state.start()
        assert backend.state.share_connections(lambda: {"1": 3}) == {}
        await backend.state.stop()
        await backend.close()
        assert asyncio.all_tasks() == tasks_before  # nothing left running

    asyncio.run(main())


async def _never_called(items: list[tuple[str, ...]]) -> None:
    raise AssertionError("a single process reaps nothing")


def test_a_redis_node_is_built_without_connecting() -> None:
    settings = msgspec.structs.replace(
        _settings(), cluster=ClusterSettings(adapter="redis", redis_url="redis://127.0.0.1:1/0")
    )
    node = Node(settings)
    assert isinstance(node.backend, RedisBackend)
    assert not node.ctx.eager  # redis-py needs a current task
    assert node.backend.jobs is not None and node.backend.marks is not None
    assert node.hub.state is node.api.state is node.backend.state


class _Store(AppStore):
    def __init__(self, apps: list[AppConfig]) -> None:
        self.apps = apps

    async def load(self) -> list[AppConfig]:
        return self.apps

    async def upsert(self, app: AppConfig, create: bool) -> None:
        raise NotImplementedError


def test_store_apps_merge_over_the_static_ones() -> None:
    node = Node(_settings())
    node.store = _Store(
        [
            AppConfig(id="1", key="key-1", secret="from-the-store"),
            AppConfig(id="2", key="key-2", secret="secret-2"),
            AppConfig(id="3", key="key-1", secret="steals app 1's key"),
        ]
    )
    asyncio.run(node.load_apps())
    app_1, app_2 = node.registry.by_id("1"), node.registry.by_id("2")
    assert app_1 is not None and app_1.config.secret == "from-the-store"
    assert app_2 is not None and node.registry.by_key("key-2") is app_2
    assert node.registry.by_id("3") is None  # ignored: the key is app 1's


def test_an_emptied_store_keeps_the_apps_and_ready_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = Node(_settings())
    store = _Store([AppConfig(id="2", key="key-2", secret="secret-2")])
    node.store = store
    asyncio.run(node.load_apps())
    assert node.ready_notes() == {}
    store.apps = []
    with pytest.raises(StoreEmptied, match=r"no apps \(it had 1\)"):
        asyncio.run(node.load_apps())
    assert node.registry.by_id("2") is not None  # untouched
    with caplog.at_level(logging.ERROR, "clarion.server"):
        for _ in range(5):
            node._store_failed("the store has no apps (it had 1)")
    assert len(caplog.records) == 1  # once, not at every reload
    assert "keeping the 2 app(s) last loaded" in caplog.records[0].getMessage()
    note = node.ready_notes()["apps_store"]
    assert isinstance(note, dict) and note["stale"] == "the store has no apps (it had 1)"
    assert node.ready()  # it serves all the same
    node._store_back()
    assert node.ready_notes() == {}


def test_a_store_empty_from_the_start_is_not_stale() -> None:
    node = Node(_settings())
    node.store = _Store([])
    asyncio.run(node.load_apps())
    asyncio.run(node.load_apps())
    assert [app.id for app in node.registry] == ["1"]
