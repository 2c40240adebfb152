"""Operations that fail safe: a certificate reload with a key that does not fit, SIGHUP
to ``clarion serve --workers``, and the demo app on a public address.

(The apps store that disappears or empties is in tests/ops/test_app_store_switch_off.py.)
Real servers in subprocesses; new TLS handshakes are made with Python's ssl module and the
``pusher`` SDK, each trusting one certificate only, so a successful handshake tells which
certificate the server presented.
"""

from __future__ import annotations

import asyncio
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

import pytest

from tests.ops.test_deploy_files import starts_on_all_interfaces
from tests.ops.test_operations import sdk_over_tls
from tests.support.certificates import self_signed_certificate
from tests.support.cluster import RedisServer
from tests.support.config import app, build_config
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.raw import established, recv_json, subscribe, ws_connect
from tests.support.server import RunningServer


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def handshake_with(url: str, cert: Path) -> bool:
    """Whether a new TLS connection trusting only ``cert`` gets ``/up`` answered."""
    try:
        with urllib.request.urlopen(url + "/up", timeout=5, context=trusting(cert)) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return False


def _until_logged(output: list[str], text: str, after: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in output[after:]:
            if text in line:
                return line
        time.sleep(0.02)
    raise AssertionError(f"never logged {text!r}:\n" + "".join(output[after:]))


class LivePair:
    """The certificate and key files a server is configured with, rewritten in place as
    a renewal would."""

    def __init__(self, directory: Path) -> None:
        self.cert, self.key = directory / "live.pem", directory / "live.key"

    def put(self, cert: Path, key: Path) -> None:
        self.cert.write_bytes(cert.read_bytes())
        self.key.write_bytes(key.read_bytes())


def test_a_mismatched_or_broken_key_on_sighup_keeps_the_old_certificate(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    first_cert, first_key = self_signed_certificate(tmp_path, "first")
    second_cert, second_key = self_signed_certificate(tmp_path, "second")
    live = LivePair(tmp_path)
    live.put(first_cert, first_key)
    server = make_server(build_config(app(), server={"tls_cert": live.cert, "tls_key": live.key}))
    assert handshake_with(server.http, first_cert)

    async def main() -> None:
        ws = await ws_connect(server.ws(), ssl=trusting(first_cert))
        await established(ws)
        await subscribe(ws, "secure")

        for broken_key in (first_key, tmp_path / "garbage.key"):
            # A renewal half done: the new certificate beside a key that is not its own
            # (the old one), then a key file cut short.
            (tmp_path / "garbage.key").write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n")
            after = len(server.output)
            live.put(second_cert, broken_key)
            server.process.send_signal(signal.SIGHUP)
            line = _until_logged(server.output, "TLS reload failed", after)
            assert "keeping the old certificate" in line
            # New handshakes still work, with the old certificate: Python's ssl...
            for _ in range(5):
                assert handshake_with(server.http, first_cert)
                assert not handshake_with(server.http, second_cert)
            # ...and the pusher SDK, whose publish reaches the open socket.
            sdk_over_tls(server, first_cert).trigger("secure", "still-tls", {"key": "old"})
            assert (await recv_json(ws))["data"] == '{"key": "old"}'

        # A good pair: new handshakes present the new certificate.
        after = len(server.output)
        live.put(second_cert, second_key)
        server.process.send_signal(signal.SIGHUP)
        _until_logged(server.output, "TLS certificate reloaded", after)
        for _ in range(5):
            assert handshake_with(server.http, second_cert)
            assert not handshake_with(server.http, first_cert)
        sdk_over_tls(server, second_cert).trigger("secure", "new-tls", {"key": "new"})
        # The open connection kept its own session all along.
        assert (await recv_json(ws))["data"] == '{"key": "new"}'
        await ws.close()

    asyncio.run(main())


def _workers(supervisor: int) -> set[int]:
    """The worker processes of a ``--workers`` supervisor (multiprocessing's resource
    tracker, also its child, is not one)."""
    workers = set()
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as listing:
        children = [int(pid) for pid in listing.read().split()]
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    workers.add(pid)
        except FileNotFoundError:
            continue
    return workers


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_sighup_to_workers_reloads_each_worker_and_sigterm_leaves_no_orphan(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    first_cert, first_key = self_signed_certificate(tmp_path, "first")
    second_cert, second_key = self_signed_certificate(tmp_path, "second")
    live = LivePair(tmp_path)
    live.put(first_cert, first_key)
    config = tmp_path / "clarion.toml"
    config.write_text(
        build_config(
            app(),
            server={"host": "127.0.0.1", "tls_cert": live.cert, "tls_key": live.key},
            cluster={"adapter": "redis", "redis_url": redis_server.url},
        )
    )
    command = ["serve", "--config", str(config), "--workers", "2", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "CLARION_METRICS_PORT": "0",
            "CLARION_DRAIN_WINDOW": "0.2",
            "PYTHONUNBUFFERED": "1",
        },
    )
    workers: set[int] = set()
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if "Clarion listening on" in line:
                url = line.split("listening on ")[1].split(" ")[0]
                break
        assert url is not None and url.startswith("https://"), url
        asyncio.run(eventually(lambda: len(_workers(process.pid)) == 2))
        workers = _workers(process.pid)
        # Both workers up (each handshake goes to one of them, picked by the kernel).
        asyncio.run(eventually(lambda: redis_server.command("ZCARD", "clarion:nodes") == b":2\r\n"))
        assert all(handshake_with(url, first_cert) for _ in range(20))

        live.put(second_cert, second_key)
        process.send_signal(signal.SIGHUP)
        # Every worker serves the new certificate: twenty handshakes in a row spread over
        # both (SO_REUSEPORT hashes each new connection's source port).
        asyncio.run(eventually(lambda: all(handshake_with(url, second_cert) for _ in range(20))))
        assert process.poll() is None  # the supervisor lives on...
        assert _workers(process.pid) == workers  # ...with the same workers
        assert not handshake_with(url, first_cert)
        # A second reload is as harmless.
        live.put(first_cert, first_key)
        process.send_signal(signal.SIGHUP)
        asyncio.run(eventually(lambda: all(handshake_with(url, first_cert) for _ in range(20))))
        assert process.poll() is None and _workers(process.pid) == workers
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(30)
        orphans = [pid for pid in workers if not _gone(pid)]
        for pid in orphans:  # a failed run leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
    assert exit_code == 0
    assert workers and not orphans


CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
PUBLIC = ["serve", "--host", "0.0.0.0", "--port", "0"]


def test_the_demo_app_is_refused_on_a_public_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clarion", *PUBLIC],
        cwd=ROOT,
        env={**CLEAN_ENV, "CLARION_METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Clarion listening" not in result.stdout
    for hint in ("CLARION_APP_ID", "[[apps]]", "--allow-demo-app", "CLARION_ALLOW_DEMO_APP"):
        assert hint in result.stderr


@pytest.mark.parametrize("opt_in", [["--allow-demo-app"], []], ids=["flag", "variable"])
def test_the_demo_app_on_a_public_address_when_opted_in(opt_in: list[str]) -> None:
    env = {**CLEAN_ENV, "CLARION_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    if not opt_in:
        env["CLARION_ALLOW_DEMO_APP"] = "1"
    starts_on_all_interfaces([*PUBLIC, *opt_in], env)
