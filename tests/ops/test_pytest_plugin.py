"""``clarion.testing`` as an application's test suite sees it: a scratch test file that
uses ``clarion_server`` and ``make_clarion_server`` with the ``pusher`` SDK, run by pytest
in a subprocess that knows nothing of Clarion but its ``pytest11`` entry point."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pusher
import pytest

from clarion.testing import ClarionServer, start_clarion_server
from tests.support.paths import JS_DIR, ROOT

SCRATCH_TESTS = """
import json
import time

import pusher
import pytest


def test_publish_reaches_a_subscriber(clarion_server):
    started = time.monotonic()
    client = pusher.Pusher(**clarion_server.pusher_kwargs)
    with clarion_server.subscribe("orders") as orders:
        client.trigger("orders", "created", {"id": 7})
        assert orders.next_event() == {"event": "created", "channel": "orders", "data": {"id": 7}}
    assert clarion_server.webhooks.wait_for("channel_occupied")["channel"] == "orders"
    assert clarion_server.webhooks.wait_for("channel_vacated")["channel"] == "orders"
    assert clarion_server.webhooks.bad_signatures == 0
    assert clarion_server.http_url == f"http://{clarion_server.host}:{clarion_server.port}"
    assert clarion_server.ws_url == f"ws://{clarion_server.host}:{clarion_server.port}"
    assert clarion_server.pusher_js_options["wsPort"] == clarion_server.port
    assert time.monotonic() - started < 5


def test_private_and_presence_are_signed_by_the_client(clarion_server):
    client = pusher.Pusher(**clarion_server.pusher_kwargs)
    with clarion_server.subscribe("private-inbox") as inbox:
        client.trigger("private-inbox", "mail", "plain text")
        assert inbox.next_event()["data"] == "plain text"
    with clarion_server.subscribe("presence-room", user_id="alice"):
        assert clarion_server.webhooks.wait_for("member_added")["user_id"] == "alice"
        users = client.users_info("presence-room")
        assert users == {"users": [{"id": "alice"}]}


def test_nothing_arrives_in_time(clarion_server):
    with clarion_server.subscribe("quiet") as quiet, pytest.raises(TimeoutError):
        quiet.next_event(timeout=0.2)


def test_app_settings(make_clarion_server):
    server = make_clarion_server(client_events=True)
    with server.subscribe("private-chat") as alice, server.subscribe("private-chat") as bob:
        alice.trigger("client-typing", {"who": "alice"})
        assert bob.next_event() == {
            "event": "client-typing", "channel": "private-chat", "data": {"who": "alice"}
        }
    event = server.webhooks.wait_for("client_event")
    assert event["event"] == "client-typing" and event["socket_id"] == alice.socket_id
    other = make_clarion_server()
    assert (other.port, other.key) != (server.port, server.key)


def test_starts_in_well_under_a_second(make_clarion_server):
    started = time.monotonic()
    make_clarion_server()
    assert time.monotonic() - started < 0.5


def test_webhooks_belong_to_the_test(clarion_server):
    assert clarion_server.webhooks.events == []


@pytest.mark.anyio
async def test_async_tests_too(clarion_server, anyio_backend):
    client = pusher.Pusher(**clarion_server.pusher_kwargs)
    with clarion_server.subscribe("async-news") as news:
        client.trigger("async-news", "tick", {"n": 1})
        assert news.next_event()["data"] == {"n": 1}


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess on ``folder``'s test files, as an application runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        # Nothing points the subprocess at Clarion's sources: the entry point loads it.
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


def test_an_application_suite_uses_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "test_realtime.py").write_text(textwrap.dedent(SCRATCH_TESTS))
    # The manual's first example is one of the tests.
    manual = (ROOT / "docs" / "testing.md").read_text()
    (tmp_path / "test_manual.py").write_text(re.findall(r"```python\n(.*?)```", manual, re.S)[0])
    result = run_pytest(tmp_path, ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout, result.stdout


def test_a_failing_expectation_fails_the_test(tmp_path: Path) -> None:
    (tmp_path / "test_wrong.py").write_text(
        textwrap.dedent(
            """
            def test_wrong(clarion_server):
                clarion_server.webhooks.wait_for("member_added", timeout=0.2)
            """
        )
    )
    result = run_pytest(tmp_path, "test_wrong.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no 'member_added' webhook within 0.2 s" in result.stdout
    # -p no:clarion turns the plugin off: the fixture is then unknown.
    off = run_pytest(tmp_path, "-p", "no:clarion", "test_wrong.py")
    assert "fixture 'clarion_server' not found" in off.stdout, off.stdout


def test_presence_members_see_each_other(clarion_server: ClarionServer) -> None:
    # In this very suite too: the entry point loaded the plugin for Clarion's own tests.
    with clarion_server.subscribe("presence-room", user_id="alice") as alice:
        with clarion_server.subscribe("presence-room", "bob", {"name": "Bob"}):
            added = alice.next_event()
            assert added["event"] == "pusher_internal:member_added"
            assert added["data"] == {"user_id": "bob", "user_info": {"name": "Bob"}}
        assert alice.next_event()["event"] == "pusher_internal:member_removed"
    removed = clarion_server.webhooks.wait_for("member_removed", channel="presence-room")
    assert removed["user_id"] in ("alice", "bob")


def test_a_refused_subscription_raises(make_clarion_server: Callable[..., ClarionServer]) -> None:
    server = make_clarion_server(max_presence_members=1)
    with (
        server.subscribe("presence-full", "alice"),
        pytest.raises(RuntimeError, match="cannot subscribe to presence-full"),
        server.subscribe("presence-full", "bob"),
    ):
        pass


def test_outside_pytest_fixtures() -> None:
    server = start_clarion_server(client_events=True)
    try:
        assert server.pusher_kwargs["port"] == server.port
    finally:
        server.stop()
        server.stop()  # once is enough; a second does nothing
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()


def test_pusher_js_connects_with_the_options(clarion_server: ClarionServer) -> None:
    script = f"""
    const Pusher = require("pusher-js");
    const client = new Pusher({json.dumps(clarion_server.key)},
                              {json.dumps(clarion_server.pusher_js_options)});
    const channel = client.subscribe("browser");
    channel.bind("pusher:subscription_succeeded", () => console.log("subscribed"));
    channel.bind("hello", (data) => {{ console.log(JSON.stringify(data)); process.exit(0); }});
    setTimeout(() => process.exit(3), 10000);
    """
    node = subprocess.Popen(["node", "-e", script], cwd=JS_DIR, stdout=subprocess.PIPE, text=True)
    assert node.stdout is not None
    try:
        assert node.stdout.readline() == "subscribed\n"
        pusher.Pusher(**clarion_server.pusher_kwargs).trigger("browser", "hello", {"a": 1})
        assert json.loads(node.stdout.readline()) == {"a": 1}
        assert node.wait(10) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
