"""The hub's call sites of the admin taps: silent while nobody watches the app, and the
console's rows (types, socket ids, channels) when a console does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from clarion.admin.taps import Taps
from clarion.cluster.interfaces import Member
from clarion.cluster.memory import MemoryBroker, MemoryState
from clarion.config import AppConfig
from clarion.hub.channels import Hub
from clarion.protocol.api import PublishRequest
from tests.support.fakes import FakeSubscriber

APP = "1"


def make_hub() -> Hub:
    config = AppConfig(id=APP, key="app-key", secret="app-secret")
    return Hub(MemoryBroker(), MemoryState(), {APP: config}.get)


async def traffic(hub: Hub) -> None:
    ann, bob = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    await hub.subscribe(APP, ann, "presence-room", Member("ann", {"name": "Ann"}))
    await hub.subscribe(APP, bob, "presence-room", Member("bob", {}))
    request = PublishRequest(
        name="news", channels=["presence-room"], data='{"x":1}', socket_id=None, info=frozenset()
    )
    await hub.publish(APP, request)
    hub.client_event(APP, ann, "presence-room", b"frame", "client-typing", {"t": 1}, "ann")
    await hub.sign_in(APP, ann, "ann", [])
    await hub.unsubscribe(APP, bob, "presence-room")
    await hub.unsubscribe(APP, ann, "presence-room")


def test_the_hub_formats_nothing_while_nobody_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a row was formatted with no console open")

    monkeypatch.setattr(Taps, "emit", never)
    hub = make_hub()
    asyncio.run(traffic(hub))
    other = hub.taps.watch("another-app")  # a console on another app changes nothing
    asyncio.run(traffic(hub))
    hub.taps.unwatch("another-app", other)


def test_the_hub_reports_every_kind_of_row_to_a_console() -> None:
    hub = make_hub()
    watcher = hub.taps.watch(APP)
    asyncio.run(traffic(hub))
    rows = [json.loads(row) for row in watcher.take()[0]]
    seen = [(r["type"], r["socket_id"], r["channel"], r["event"]) for r in rows]
    assert seen == [
        ("Subscribed", "1.1", "presence-room", None),
        ("Occupied", "1.1", "presence-room", None),
        ("Member added", "1.1", "presence-room", None),
        ("Subscribed", "1.2", "presence-room", None),
        ("Member added", "1.2", "presence-room", None),
        ("API Message", None, "presence-room", "news"),
        ("Client Event", "1.1", "presence-room", "client-typing"),
        ("Sign-in", "1.1", None, None),
        ("Unsubscribed", "1.2", "presence-room", None),
        ("Member removed", None, "presence-room", None),
        ("Unsubscribed", "1.1", "presence-room", None),
        ("Member removed", None, "presence-room", None),
        ("Vacated", "1.1", "presence-room", None),
    ]
    added = json.loads(rows[2]["details"])
    assert added == {"user_id": "ann", "user_info": {"name": "Ann"}}
