"""An app switched off in its store loses its open connections at the next reload.

Disabling an app (``clarion apps disable``) closes each of its open connections with the
``pusher:error`` a new connection to it gets, 4003 "Application disabled"; removing it
from the store, with 4001 "Application does not exist" (docs/protocol.md §2, §18). Both codes are
"refused" for pusher-js: it ends ``disconnected`` and does not come back. Other apps'
connections stay as they are, and a re-enabled app takes new connections again.

Real pusher-js clients (through the node driver) and the PyPI ``pusher`` SDK; every wait
is on what a client or the HTTP API observes, never a fixed sleep.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pusher
import pytest
from pusher.errors import PusherForbidden

from tests.support.apps_cli import cli
from tests.support.config import build_config
from tests.support.pusherjs import Driver, JsClient
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

KEEP_ID, KEEP_KEY = "81", "keep-key"
STOP_ID, STOP_KEY = "82", "stop-key"
CHANNEL = "news"


class Store:
    """A SQLite app store holding the two apps of these tests, made with the CLI."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "apps.db"
        self.url = f"sqlite:///{self.path}"
        self.secrets: dict[str, str] = {}
        for app_id, key in ((KEEP_ID, KEEP_KEY), (STOP_ID, STOP_KEY)):
            secret_file = tmp_path / f"secret-{app_id}"
            made = cli(
                self.url, "create", "--id", app_id, "--key", key, "--secret-file", str(secret_file)
            )
            assert made.returncode == 0, made.stderr
            self.secrets[app_id] = secret_file.read_text().strip()

    def sdk(self, server: RunningServer, app_id: str) -> pusher.Pusher:
        key = KEEP_KEY if app_id == KEEP_ID else STOP_KEY
        return python_sdk(server, app_id=app_id, key=key, secret=self.secrets[app_id])

    def client(self, js: Driver, name: str, app_id: str, **options: Any) -> JsClient:
        key = KEEP_KEY if app_id == KEEP_ID else STOP_KEY
        return js.client(name, key=key, secret=self.secrets[app_id], app_id=app_id, **options)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


Started = tuple[RunningServer, Driver, JsClient, list[JsClient]]


def _start(
    store: Store,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> Started:
    """A server on the store, one client of the kept app and two of the other, all
    subscribed to the same channel name."""
    server = make_server(build_config(apps_store={"url": store.url, "refresh_seconds": 0.2}))
    js = make_driver(server)
    keep = store.client(js, "keep", KEEP_ID)
    keep.subscribe(CHANNEL)
    doomed = [store.client(js, f"doomed-{n}", STOP_ID) for n in (1, 2)]
    for client in doomed:
        client.subscribe(CHANNEL)
    return server, js, keep, doomed


def _assert_refused(clients: list[JsClient], code: int, message: str, since: int) -> None:
    """Each client got ``pusher:error`` ``code``, pusher-js acted on the close with that
    code, and it stays disconnected (no reconnect scheduled)."""
    for client in clients:
        error = client.wait(type="pusher_error", since=since)
        assert error["data"] == {"code": code, "message": message}
        client.wait_closed(code, since=since)
        client.wait(type="state", current="disconnected", since=since)
        client.assert_stopped()
        assert client.find(type="connecting_in", since=since) == []


def _assert_untouched(keep: JsClient, sdk: pusher.Pusher, since: int) -> None:
    """The other app's client is on its first connection and still gets a publish."""
    assert sdk.trigger(CHANNEL, "still-here", {"n": 1}) == {}
    event = keep.wait_event(CHANNEL, "still-here", since=since)
    assert event["data"] == {"n": 1}
    assert keep.inspect()["state"] == "connected"
    assert len(keep.find(type="connected")) == 1  # never dropped and reconnected
    assert keep.find(type="pusher_error") == []


def _until_accepted(sdk: pusher.Pusher, timeout: float = 10.0) -> None:
    """Return once the HTTP API takes the app's requests again (the reload that
    re-enabled it is in); it answers 403 while the app is disabled."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sdk.trigger("probe", "probe", {})
            return
        except PusherForbidden:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_disabling_an_app_closes_its_connections_with_4003(
    store: Store,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    server, js, keep, doomed = _start(store, make_server, make_driver)
    since = js.mark()

    disabled = cli(store.url, "disable", "--id", STOP_ID)
    assert disabled.returncode == 0, disabled.stderr

    _assert_refused(doomed, 4003, "Application disabled", since)
    _assert_untouched(keep, store.sdk(server, KEEP_ID), since)

    # Enabled again: new connections are taken, subscribe, and get publishes.
    enabled = cli(store.url, "enable", "--id", STOP_ID)
    assert enabled.returncode == 0, enabled.stderr
    stop_sdk = store.sdk(server, STOP_ID)
    _until_accepted(stop_sdk)
    again = store.client(js, "again", STOP_ID)
    again.subscribe(CHANNEL)
    since = js.mark()
    assert stop_sdk.trigger(CHANNEL, "back", {"ok": True}) == {}
    assert again.wait_event(CHANNEL, "back", since=since)["data"] == {"ok": True}


def test_removing_an_app_closes_its_connections_with_4001(
    store: Store,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    server, js, keep, doomed = _start(store, make_server, make_driver)
    since = js.mark()

    # The CLI has no delete: the row goes the way an operator's SQL would take it.
    with closing(sqlite3.connect(store.path)) as db:
        db.execute("DELETE FROM clarion_apps WHERE id = ?", (STOP_ID,))
        db.commit()

    _assert_refused(doomed, 4001, "Application does not exist", since)
    _assert_untouched(keep, store.sdk(server, KEEP_ID), since)


def _until_logged(server: RunningServer, text: str, after: int, timeout: float = 10.0) -> str:
    """The first line of the server's output after line ``after`` that holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.output[after:]:
            if text in line:
                return line
        time.sleep(0.02)
    raise AssertionError(f"the server never logged {text!r}:\n" + "".join(server.output[after:]))


def _ready(server: RunningServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(server.http + "/ready", timeout=5) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _until_stale(server: RunningServer, for_seconds: float = 0.0) -> dict[str, Any]:
    """``/ready``'s note on the store, once it says the store has been unusable for at
    least ``for_seconds``; the node stays ready all along."""
    deadline = time.monotonic() + 10 + for_seconds
    while True:
        status, body = _ready(server)
        assert status == 200 and body["ready"] is True, body
        note: dict[str, Any] | None = body.get("apps_store")
        if note is not None and note["since_seconds"] >= for_seconds:
            return note
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def _until_fresh(server: RunningServer) -> None:
    deadline = time.monotonic() + 10
    while _ready(server) != (200, {"ready": True}):
        assert time.monotonic() < deadline, _ready(server)
        time.sleep(0.05)


def test_a_store_file_moved_away_keeps_the_apps(
    store: Store,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """The file behind a SQLite store disappears (moved, a volume unmounted): the server
    neither creates an empty one nor drops its apps; every client stays connected."""
    server, js, keep, doomed = _start(store, make_server, make_driver)
    since = js.mark()
    moved = store.path.with_suffix(".moved")
    after = len(server.output)
    store.path.rename(moved)

    _until_logged(server, "apps store unavailable", after)
    # A few more reloads come and go (five a second); none of them makes a file.
    _until_stale(server, for_seconds=1.0)
    assert not store.path.exists()
    _assert_untouched(keep, store.sdk(server, KEEP_ID), since)
    for client in doomed:
        assert client.inspect()["state"] == "connected"
        assert client.find(type="pusher_error", since=since) == []

    # Back in place: reloads read it again, and changes made to it take effect.
    moved.rename(store.path)
    _until_fresh(server)
    assert cli(store.url, "disable", "--id", STOP_ID).returncode == 0
    _assert_refused(doomed, 4003, "Application disabled", since)


def test_an_emptied_store_keeps_the_apps_and_ready_says_so(
    store: Store,
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
) -> None:
    """The store answers with no app at all (its table wiped, an empty database put in
    its place): taken for a broken store, not for two apps removed at once. Every client
    stays, the API works, the log says it once (not at every reload) and ``/ready`` stays
    200 with a note; once the store has apps again, the note goes and changes apply."""
    server, js, keep, doomed = _start(store, make_server, make_driver)
    since = js.mark()
    assert _ready(server) == (200, {"ready": True})
    with closing(sqlite3.connect(store.path)) as db:
        rows = db.execute("SELECT * FROM clarion_apps").fetchall()
        db.execute("DELETE FROM clarion_apps")
        db.commit()

    note = _until_stale(server)
    assert note["stale"] == "the store has no apps (it had 2)"
    _until_stale(server, for_seconds=1.0)  # five reloads or so
    logged = [line for line in server.output if "apps store unavailable" in line]
    assert len(logged) == 1, logged
    assert "keeping the 2 app(s) last loaded" in logged[0]
    _assert_untouched(keep, store.sdk(server, KEEP_ID), since)
    assert store.sdk(server, STOP_ID).trigger(CHANNEL, "stop-app", {}) == {}
    for client in doomed:
        assert client.wait_event(CHANNEL, "stop-app", since=since)["data"] == {}
        assert client.inspect()["state"] == "connected"
        assert client.find(type="pusher_error", since=since) == []

    with closing(sqlite3.connect(store.path)) as db:
        db.executemany("INSERT INTO clarion_apps VALUES (?, ?, ?, ?, ?)", rows)
        db.commit()
    _until_fresh(server)
    assert any("apps store usable again" in line for line in server.output)
    assert cli(store.url, "disable", "--id", STOP_ID).returncode == 0
    _assert_refused(doomed, 4003, "Application disabled", since)
