"""Running Clarion in production: drain, readiness, TLS, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pusher
import pytest
from pusher.requests import RequestsBackend

from tests.support.certificates import self_signed_certificate
from tests.support.config import app, build_config
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.pusherjs import Driver
from tests.support.raw import established, recv_json, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver


def status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sigterm_drains_connections_gradually_with_4200_and_keeps_webhooks(
    receiver: Receiver, make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    hooks = {"url": f"{receiver.url}/hooks", "event_types": ["channel_occupied", "channel_vacated"]}
    config = build_config(
        app(webhook_delay=3, webhooks=[hooks]),
        server={"max_connections_per_ip": 0, "pid_file": tmp_path / "clarion.pid"},
    )
    server = make_server(config, env={"CLARION_DRAIN_WINDOW": "2.0"})
    count = 200

    async def main() -> None:
        sockets = []
        for index in range(count):
            ws = await ws_connect(server.ws())
            await established(ws)
            await subscribe(ws, f"room-{index % 10}")
            sockets.append(ws)
        receiver.wait_for(
            lambda _: sum(e["name"] == "channel_occupied" for e in receiver.events()) == 10
        )
        assert status(server.http + "/ready") == 200
        # `clarion drain` sends SIGTERM to the pid in the pid file and waits.
        drain = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clarion",
            "drain",
            "--pid-file",
            str(tmp_path / "clarion.pid"),
            cwd=ROOT,
        )
        closed_at: list[float] = []

        async def watch(ws: object) -> None:
            error = await recv_json(ws, timeout=10)  # type: ignore[arg-type]
            assert error["data"]["code"] == 4200
            await asyncio.wait_for(ws.wait_closed(), 10)  # type: ignore[attr-defined]
            assert ws.protocol.close_rcvd.code == 4200  # type: ignore[attr-defined]
            closed_at.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(watch(ws) for ws in sockets))
        assert await drain.wait() == 0
        # Spread over the window, not all at once: the first and last closes are apart.
        spread = max(closed_at) - min(closed_at)
        assert spread >= 1.0, spread
        assert max(closed_at) - started < 6

    asyncio.run(main())
    assert server.process.wait(10) == 0
    # The vacated webhooks were held (webhook_delay = 3) when the drain began:
    # the shutdown delivered them instead of dropping them.
    vacated = [e for e in receiver.events() if e["name"] == "channel_vacated"]
    assert len(vacated) == 10


def test_ready_reports_draining_and_thresholds(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(build_config(app(), server={"ready_max_open_files": 1}))
    assert status(server.http + "/ready") == 503  # over the file-descriptor threshold
    assert status(server.http + "/up") == 200  # alive all the same
    normal = make_server(env={"CLARION_DRAIN_WINDOW": "3.0"})

    async def main() -> None:
        ws = await ws_connect(normal.ws())
        await established(ws)
        assert status(normal.http + "/ready") == 200
        normal.process.send_signal(signal.SIGTERM)

        # While draining (the connection is still open), /ready says no. The listener is
        # closed, so the probe may also be refused: either way no new traffic comes.
        def not_ready() -> bool:
            try:
                return status(normal.http + "/ready") == 503
            except OSError:
                return True

        await eventually(not_ready)
        await ws.close()

    asyncio.run(main())


def sdk_over_tls(server: RunningServer, cert: Path) -> pusher.Pusher:
    """The official Python SDK with ssl=True. It pins certificate checks to its own CA
    bundle; its documented backend hook lets the test trust the test certificate."""

    class TrustTestCertificate(RequestsBackend):  # type: ignore[misc]
        def __init__(self, client: object, **options: object) -> None:
            super().__init__(client, **options)
            self.options["verify"] = str(cert)

    return pusher.Pusher(
        app_id="1",
        key="app-key",
        secret="app-secret",
        host=server.host,
        port=server.port,
        ssl=True,
        backend=TrustTestCertificate,
    )


def test_tls_for_websocket_and_http_api_with_reload(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    first_cert, first_key = self_signed_certificate(tmp_path, "first")
    second_cert, second_key = self_signed_certificate(tmp_path, "second")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    live_cert.write_bytes(first_cert.read_bytes())
    live_key.write_bytes(first_key.read_bytes())
    server = make_server(build_config(app(), server={"tls_cert": live_cert, "tls_key": live_key}))
    assert server.tls and server.http.startswith("https://")

    def trusting(cert: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(cert))
        return context

    async def main() -> None:
        ws = await ws_connect(server.ws(), ssl=trusting(first_cert))
        await established(ws)
        await subscribe(ws, "secure")

        client = sdk_over_tls(server, first_cert)
        client.trigger("secure", "over-tls", {"ok": True})
        assert (await recv_json(ws))["event"] == "over-tls"
        await ws.close()

        # New certificate on disk, SIGHUP: new connections get it, nothing restarts.
        live_cert.write_bytes(second_cert.read_bytes())
        live_key.write_bytes(second_key.read_bytes())
        server.process.send_signal(signal.SIGHUP)

        def serves_second() -> bool:
            try:
                return status(server.http + "/up", trusting(second_cert)) == 200
            except (urllib.error.URLError, ssl.SSLError):
                return False

        await eventually(serves_second)
        with pytest.raises(urllib.error.URLError):
            status(server.http + "/up", trusting(first_cert))

    asyncio.run(main())


def test_unreadable_certificate_is_a_clear_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "clarion.toml"
    missing = {"tls_cert": tmp_path / "missing.pem", "tls_key": tmp_path / "missing.key"}
    config.write_text(build_config(server=missing))
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 2
    assert "tls_cert" in out.stderr and "cannot read" in out.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    config.write_text(build_config(server={"tls_cert": garbage, "tls_key": garbage, "port": 0}))
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={**os.environ, "CLARION_METRICS_PORT": "0"},
    )
    assert out.returncode == 1
    assert "TLS certificate or key" in out.stderr


def test_logs_are_json_lines_without_secrets(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(build_config(app(), server={"log_requests": True}))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        client = python_sdk(server)
        client.trigger("logged", "e", {})
        await ws.close()

        def has(message: str) -> bool:
            return any(message in line for line in server.output)

        await eventually(lambda: has("connection closed") and has("/apps/1/events"))

    asyncio.run(main())
    records = [json.loads(line) for line in server.output if line.startswith("{")]
    closed = [r for r in records if r["message"] == "connection closed"]
    requests = [r for r in records if r["message"] == "request"]
    assert closed and closed[0]["app"] == "1" and closed[0]["socket_id"]
    assert closed[0]["code"] == "1000" and "seconds" in closed[0] and closed[0]["ip"]
    publish = [r for r in requests if r["path"] == "/apps/1/events"]
    assert publish and publish[0]["status"] == 200 and publish[0]["method"] == "POST"
    text = "".join(server.output)
    assert "app-secret" not in text and "auth_signature" not in text


def test_pusher_js_over_tls(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[..., Driver],
    tmp_path: Path,
) -> None:
    """pusher-js with forceTLS (wss://) and the Python SDK with ssl=True, end to end."""
    cert, key = self_signed_certificate(tmp_path, "pusherjs")
    server = make_server(build_config(app(), server={"tls_cert": cert, "tls_key": key}))
    js = make_driver(server, env={"NODE_EXTRA_CA_CERTS": str(cert)})
    client = js.client("secure", tls=True)
    client.subscribe("tls-channel")
    sdk_over_tls(server, cert).trigger("tls-channel", "over-wss", {"tls": True})
    assert client.wait_event("tls-channel", "over-wss")["data"] == {"tls": True}


def test_drain_with_200_pusher_js_clients(
    make_server: Callable[..., RunningServer], make_driver: Callable[..., Driver]
) -> None:
    """SIGTERM closes 200 connected pusher-js clients with 4200, spread over the window."""
    server = make_server(
        build_config(app(), server={"max_connections_per_ip": 0}),
        env={"CLARION_DRAIN_WINDOW": "2.0"},
    )
    js = make_driver(server)
    count = 200
    for index in range(count):
        js.client(f"c{index}", wait=False)
    js.wait_count({"type": "state", "current": "connected"}, count, timeout=60)
    since = js.mark()
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    closes = js.wait_count({"type": "ws_close", "code": 4200}, count, since=since, timeout=20)
    moments = [report["received_at"] for report in closes]
    # Spread over the drain window, not all at once.
    assert max(moments) - min(moments) >= 1.0
    assert max(moments) - started < 6
    assert server.process.wait(15) == 0
