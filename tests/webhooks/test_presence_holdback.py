"""Presence hold-back with real pusher-js clients: a member who comes back within the
app's ``webhook_delay`` (a page reload) gives neither ``member_removed`` nor a second
``member_added`` webhook, to any target; one who stays away gives ``member_removed``
after the delay. In memory mode and across two nodes of a cluster.

A reload is a pusher-js client disconnected and a new one (same user) connected and
subscribed, as a browser page does. Absence is proven by accounting: once the last
expected webhook arrived and the server reports nothing queued, every event it sent is
among those received, and the counts are exact.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.cluster import RedisServer, cluster_config
from tests.support.config import app, build_config
from tests.support.polling import until
from tests.support.pusherjs import Driver, JsClient
from tests.support.raw import signed
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

CHANNEL = "presence-reload"
DELAY = 1.5

# One target wants both, one only the arrival, one only the departure: the cancellation
# rule is the same for each. An app whose only target wants member_added holds its
# member_removed all the same (before, each reload gave it a member_added).
PATHS = {
    "/both": ["member_added", "member_removed"],
    "/added": ["member_added"],
    "/removed": ["member_removed"],
}
TARGET_SETS = pytest.mark.parametrize(
    "paths", [["/added"], list(PATHS)], ids=["only-member_added", "each-kind"]
)


def _targets(receiver: Receiver, paths: list[str]) -> list[dict[str, Any]]:
    return [{"url": receiver.url + path, "event_types": PATHS[path]} for path in paths]


def _join(driver: Driver, name: str, user: str, node: RunningServer | None = None) -> JsClient:
    host, port = (node.host, node.port) if node is not None else (None, None)
    client = driver.client(name, host=host, port=port)
    client.subscribe(CHANNEL, presence={"user_id": user, "user_info": {"name": user}})
    return client


def _counts(receiver: Receiver, path: str) -> Counter[tuple[str, str]]:
    return Counter((e["name"], e["user_id"]) for e in receiver.events(path))


def _settled(receiver: Receiver, nodes: list[RunningServer]) -> None:
    """Wait until no node has a webhook queued or in flight and every request it counts
    as sent was received: nothing else is on its way."""

    def quiet() -> bool:
        sent = 0
        for node in nodes:
            status, body, _ = signed(node.host, node.port, "GET", "/apps/1/webhooks/status")
            assert status == 200
            if any(t["queued"] or t["retrying"] for t in body["targets"]):
                return False
            sent += body["sent"]
        return sent == len(receiver.events())

    until(quiet, timeout=15, what="webhooks delivered and nothing queued")


def _reloads(
    receiver: Receiver,
    driver: Driver,
    nodes: list[RunningServer],
    paths: list[str],
    users: int,
    rounds: int,
) -> None:
    """``users`` members join; each reloads ``rounds`` times within the delay (moving to
    the next node in a cluster); then user 0 leaves for good. Exact webhook counts."""
    clients = {i: _join(driver, f"u{i}-0", f"u{i}", nodes[0]) for i in range(users)}
    receiver.wait_for(lambda _: len(receiver.events("/added")) == users, timeout=15)
    for round_ in range(1, rounds + 1):
        for i in range(users):
            driver.request("disconnect", client=clients[i].name)
            node = nodes[round_ % len(nodes)]
            clients[i] = _join(driver, f"u{i}-{round_}", f"u{i}", node)
    # Every member is back: the one who leaves now stays away past the delay, and a
    # newcomer's member_added comes after any a reload could have caused.
    driver.request("disconnect", client=clients[0].name)
    left_at = time.monotonic()
    _join(driver, "late", "late", nodes[-1])
    if "/removed" in paths:
        receiver.wait_for(lambda _: len(receiver.events("/removed")) >= 1, timeout=15)
        # Held for the delay from the departure, not sent at once.
        gone = next(r.at for r in receiver.requests if "member_removed" in r.names)
        assert gone - left_at >= DELAY - 0.1
    if "/added" in paths:
        receiver.wait_for(lambda _: ("member_added", "late") in _counts(receiver, "/added"))
    _settled(receiver, nodes)

    added = Counter({("member_added", u): 1 for u in [*(f"u{i}" for i in range(users)), "late"]})
    removed = Counter({("member_removed", "u0"): 1})
    expected = {"/added": added, "/removed": removed, "/both": added + removed}
    for path in paths:
        assert _counts(receiver, path) == expected[path], path


@TARGET_SETS
@pytest.mark.parametrize(("users", "rounds"), [(1, 2), (25, 3)], ids=["one-user", "load"])
def test_reloads_within_the_delay_give_exact_member_webhooks(
    paths: list[str],
    users: int,
    rounds: int,
    receiver: Receiver,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[..., Driver],
) -> None:
    server = make_server(build_config(app(webhook_delay=DELAY, webhooks=_targets(receiver, paths))))
    _reloads(receiver, make_driver(server), [server], paths, users=users, rounds=rounds)


@TARGET_SETS
def test_reloads_across_two_nodes_give_exact_member_webhooks(
    paths: list[str],
    receiver: Receiver,
    redis_server: RedisServer,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[..., Driver],
) -> None:
    config = cluster_config(redis_server, webhook_delay=DELAY, webhooks=_targets(receiver, paths))
    nodes = [make_server(config), make_server(config)]
    _reloads(receiver, make_driver(nodes[0]), nodes, paths, users=25, rounds=3)
