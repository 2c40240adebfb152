"""``clarion trigger/channels/channel/users/tail``: the HTTP API from the command line,
against a running server, signing with an app from flags, the environment or --config."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.config import app, build_config
from tests.support.paths import ROOT
from tests.support.raw import established, recv_json, subscribe, ws_connect
from tests.support.server import RunningServer

APP_FLAGS = ["--app-id", "1", "--key", "app-key", "--secret", "app-secret"]


def clarion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
        cwd=ROOT,
    )


def api(server: RunningServer, *args: str) -> Any:
    result = clarion(*args, "--url", server.http, *APP_FLAGS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextmanager
def tail(server: RunningServer, *channels: str) -> Iterator[subprocess.Popen[str]]:
    """``clarion tail`` on ``channels``, once it says it subscribed to each."""
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", "tail", *channels, "--url", server.http, *APP_FLAGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    try:
        for channel in channels:
            line = process.stderr.readline()
            assert line == f"subscribed to {channel}\n", line + process.stderr.read()
        yield process
    finally:
        process.terminate()
        process.wait(10)


def test_trigger_then_tail_prints_the_event(server: RunningServer) -> None:
    with tail(server, "cli-news", "private-cli", "presence-cli") as process:
        assert process.stdout is not None
        assert api(server, "trigger", "cli-news", "flash", '{"n":1}') == {}
        line = json.loads(process.stdout.readline())
        assert line == {"event": "flash", "channel": "cli-news", "data": '{"n":1}'}
        api(server, "trigger", "--channels", "private-cli,presence-cli", "memo", "hi")
        lines = [json.loads(process.stdout.readline()) for _ in range(2)]
        assert sorted(line["channel"] for line in lines) == ["presence-cli", "private-cli"]
        assert all(line["data"] == "hi" and line["event"] == "memo" for line in lines)
        # tail is a presence member, so the channel queries see it.
        assert api(server, "users", "presence-cli") == {"users": [{"id": "clarion-tail"}]}
        channel = api(server, "channel", "presence-cli", "--info", "user_count")
        assert channel == {"occupied": True, "user_count": 1}
        listing = api(server, "channels", "--prefix", "presence-", "--info", "user_count")
        assert listing["channels"]["presence-cli"] == {"user_count": 1}
        assert "cli-news" in api(server, "channels")["channels"]


def test_trigger_info_and_exclude(server: RunningServer) -> None:
    async def main() -> None:
        ws = await ws_connect(server.ws())
        socket_id = await established(ws)
        assert (await subscribe(ws, "cli-info"))["event"].endswith("subscription_succeeded")
        args = ("trigger", "cli-info", "ping", "{}", "--info", "subscription_count")
        answer = await asyncio.to_thread(api, server, *args)
        assert answer == {"channels": {"cli-info": {"subscription_count": 1}}}
        assert (await recv_json(ws))["event"] == "ping"
        await asyncio.to_thread(api, server, "trigger", "cli-info", "no", "--exclude", socket_id)
        await asyncio.to_thread(api, server, "trigger", "cli-info", "yes")
        assert (await recv_json(ws))["event"] == "yes"
        await ws.close()

    asyncio.run(main())


def test_http_errors_exit_1_with_the_status_and_the_servers_message(
    server: RunningServer,
) -> None:
    wrong = clarion("channels", "--url", server.http, "--app-id", "1", "--key", "app-key",
                    "--secret", "not-the-secret")  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("clarion: HTTP 401: ")
    assert "signature" in wrong.stderr.lower() and len(wrong.stderr.splitlines()) == 1
    bad_name = clarion("channel", "bad name!", "--url", server.http, *APP_FLAGS)
    assert bad_name.returncode == 1 and bad_name.stderr.startswith("clarion: HTTP 400: ")
    down = clarion("channels", "--url", "http://127.0.0.1:9", *APP_FLAGS)
    assert down.returncode == 1 and down.stderr.startswith("clarion: http://127.0.0.1:9: ")


def test_the_app_and_server_come_from_the_environment_or_the_config(
    server: RunningServer, tmp_path: Path
) -> None:
    env = {
        "CLARION_HOST": server.host,
        "CLARION_PORT": str(server.port),
        "CLARION_APP_ID": "1",
        "CLARION_APP_KEY": "app-key",
        "CLARION_APP_SECRET": "app-secret",
    }
    from_env = clarion("channels", env=env)
    assert from_env.returncode == 0, from_env.stderr
    assert "channels" in json.loads(from_env.stdout)
    config = tmp_path / "clarion.toml"
    config.write_text(
        build_config(
            app("2", "other-key", "other-secret"),
            server={"host": server.host, "port": server.port},
        )
    )
    from_file = clarion("trigger", "cli-config", "e", "--config", str(config))
    assert from_file.returncode == 0, from_file.stderr
    # Another app's credentials for app 1's id: the server refuses them.
    mixed = clarion("channels", "--config", str(config), "--app-id", "1", "--key", "other-key",
                    "--secret", "other-secret")  # fmt: skip
    assert mixed.returncode == 1 and "HTTP 401" in mixed.stderr


def test_tail_of_a_refused_subscription_exits_1_saying_why(server: RunningServer) -> None:
    result = clarion("tail", "private-x", "--url", server.http, "--app-id", "1",
                     "--key", "app-key", "--secret", "wrong")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("clarion: private-x: refused: "), result.stderr


def test_usage_errors() -> None:
    result = clarion("trigger", "only-an-event", "--url", "http://127.0.0.1:9", *APP_FLAGS)
    assert result.returncode == 1 and "usage: clarion trigger" in result.stderr
    no_app = clarion("channels", "--app-id", "9", "--url", "http://127.0.0.1:9")
    assert no_app.returncode == 2 and "no app to sign with" in no_app.stderr
