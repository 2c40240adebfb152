"""The admin console's taps: nothing formatted without a watcher, bounded queues that
drop (and count) instead of pushing back, grouped errors, no secret in a row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from clarion.admin import taps
from clarion.admin.taps import MAX_DETAILS, Taps, Watcher
from clarion.protocol import messages
from clarion.protocol.errors import CloseCode, ConnectRefused
from clarion.protocol.handshake import ORIGIN_NOT_ALLOWED


class Unencodable:
    """Details that raise if anyone tries to format them."""


def test_nothing_is_formatted_while_nobody_watches() -> None:
    t = Taps()
    assert t.apps == {}
    t.emit("1", taps.API_MESSAGE, "1.1", "ch", "ev", Unencodable())  # no watcher: no encode
    watcher = t.watch("1")
    t.emit("2", taps.API_MESSAGE, "1.1", "ch", "ev", Unencodable())  # another app's
    assert watcher.rows == deque_empty()
    with pytest.raises(TypeError):
        t.emit("1", taps.API_MESSAGE, "1.1", "ch", "ev", Unencodable())


def deque_empty() -> object:
    from collections import deque

    return deque()


def test_rows_carry_what_the_console_shows() -> None:
    t = Taps(node="n1")
    watcher = t.watch("1")
    t.emit("1", taps.SUBSCRIBED, "1.2", "presence-room", None, {"user_id": "u"})
    rows, dropped = watcher.take()
    assert dropped == 0
    row = json.loads(rows[0])
    assert row["type"] == "Subscribed"
    assert row["socket_id"] == "1.2"
    assert row["channel"] == "presence-room"
    assert row["node"] == "n1"
    assert json.loads(row["details"]) == {"user_id": "u"}


def test_details_are_capped() -> None:
    t = Taps()
    watcher = t.watch("1")
    t.emit("1", taps.API_MESSAGE, None, "c", "e", "x" * (MAX_DETAILS * 3))
    row = json.loads(watcher.take()[0][0])
    assert len(row["details"]) < MAX_DETAILS + 100
    assert "more characters" in row["details"]


def test_a_slow_console_loses_rows_and_is_told_how_many() -> None:
    watcher = Watcher(limit=1000)
    for _ in range(100):
        watcher.put(b"x" * 100)
    assert watcher.size <= 1000
    rows, dropped = watcher.take()
    assert len(rows) == 10
    assert dropped == 90
    assert watcher.take() == ([], 0)


def test_unwatch_leaves_the_data_plane_check_empty() -> None:
    t = Taps()
    a, b = t.watch("1"), t.watch("1")
    t.unwatch("1", a)
    assert "1" in t.apps
    t.unwatch("1", b)
    assert t.apps == {}
    t.unwatch("1", b)  # twice: harmless


def test_errors_are_grouped_with_counts_and_streamed() -> None:
    t = Taps()
    t.error("1", "Auth failure", "401: bad signature")
    watcher = t.watch("1")
    t.error("1", "Auth failure", "401: bad signature")
    t.error("1", "Slow consumer", "4100: too slow")
    groups = t.error_groups("1")
    assert [(g.kind, g.count) for g in groups] == [("Slow consumer", 1), ("Auth failure", 2)]
    rows = [json.loads(r) for r in watcher.take()[0]]
    assert [r["type"] for r in rows] == ["Error", "Error"]


def test_error_replies_are_recorded_without_the_auth_sent() -> None:
    t = Taps()
    watcher = t.watch("1")
    frame = messages.subscription_error("private-x", "AuthError", "Invalid signature", 401)
    taps.reply_sent(t, SimpleNamespace(id="1"), "1.1", frame)
    taps.reply_sent(t, SimpleNamespace(id="1"), "1.1", messages.event("e", "c", "{}"))
    [group] = t.error_groups("1")
    assert group.kind == "Auth failure"
    assert "private-x" in group.message
    assert len(watcher.take()[0]) == 1


def test_webhook_attempts_are_kept_and_failures_are_errors() -> None:
    t = Taps()
    watcher = t.watch("1")
    job = SimpleNamespace(attempts=2, count=1, events=[{"name": "channel_occupied"}])
    t.webhook("1", "http://hooks.example/x", job, "HTTP 500")
    t.webhook("1", "http://hooks.example/x", job, None)
    assert [d.status for d in t.deliveries["1"]] == ["sent", "HTTP 500"]
    assert t.error_groups("1")[0].kind == "Webhook failure"
    types = [json.loads(r)["type"] for r in watcher.take()[0]]
    assert types == ["Error", "Webhook", "Webhook"]


def test_refused_origins_are_grouped_by_origin_under_their_own_kind() -> None:
    t = Taps()
    app = SimpleNamespace(id="1")
    refused = ConnectRefused(CloseCode.UNAUTHORIZED, ORIGIN_NOT_ALLOWED)
    for origin in ("https://evil.example", "https://evil.example", "https://x" + "y" * 500):
        taps.connection_refused(t, lambda key: app, "/app/key", refused, origin)
    taps.connection_refused(t, lambda key: None, "/app/nokey", refused, "https://a.example")
    groups = {(g.kind, g.message): g.count for g in t.error_groups("1")}
    assert groups[("Refused origin", "4009: Origin not allowed: https://evil.example")] == 2
    long = next(message for kind, message in groups if "xyy" in message)
    assert len(long) < taps.MAX_ORIGIN + 40
    assert len(groups) == 2


def test_an_app_watched_on_another_node_is_formatted_once_and_relayed() -> None:
    t = Taps(node="here")
    relayed: list[tuple[str, bytes]] = []
    t.relay = lambda app_id, row: relayed.append((app_id, row))
    t.emit("1", taps.API_MESSAGE, None, "c", "e", Unencodable())  # nobody anywhere: nothing
    t.watched_elsewhere("1", True)
    assert t.apps == {"1": []}
    t.emit("1", taps.API_MESSAGE, None, "c", "e", "{}")
    t.emit("2", taps.API_MESSAGE, None, "c", "e", Unencodable())  # not watched anywhere
    [(app_id, row)] = relayed
    assert app_id == "1"
    assert json.loads(row)["node"] == "here"
    # A console here too: the same bytes go to it and to the other node.
    watcher = t.watch("1")
    t.emit("1", taps.CONNECTION, "1.1")
    assert watcher.take()[0] == [relayed[-1][1]]
    # The other node's console closes: this node's console keeps the app watched.
    t.watched_elsewhere("1", False)
    t.emit("1", taps.CONNECTION, "1.2")
    assert len(relayed) == 2
    t.unwatch("1", watcher)
    assert t.apps == {}
    t.watched_elsewhere("1", False)  # twice: harmless
    assert t.apps == {}


def test_an_app_watched_elsewhere_stays_watched_when_the_local_console_closes() -> None:
    t = Taps()
    watcher = t.watch("1")
    t.watched_elsewhere("1", True)
    t.unwatch("1", watcher)
    assert t.apps == {"1": []}


def test_rows_of_other_nodes_go_to_this_nodes_watchers_only() -> None:
    t = Taps()
    relayed: list[bytes] = []
    t.relay = lambda app_id, row: relayed.append(row)
    t.receive("1", b'{"type":"Connection"}')  # nobody watches here: dropped
    watcher = t.watch("1")
    t.watched_elsewhere("1", True)
    t.receive("1", b'{"type":"Connection"}')
    assert watcher.take()[0] == [b'{"type":"Connection"}']
    assert relayed == []  # never sent back out
