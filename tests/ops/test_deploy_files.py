"""The container and service files. No Docker engine runs here, so this checks what can be
checked: the entrypoint and health-check commands work, and the files say what they must."""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.server import RunningServer


def _dockerfile() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    docker = _dockerfile()
    assert docker["FROM"][0].startswith("python:3.11-slim")
    assert docker["USER"] == ["clarion"]
    assert docker["ENTRYPOINT"] == ['["clarion"]'] and docker["CMD"] == ['["serve"]']
    assert "clarion" in docker["HEALTHCHECK"][0] and "health" in docker["HEALTHCHECK"][0]
    assert docker["STOPSIGNAL"] == ["SIGTERM"]


def test_health_check_command(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    health = _dockerfile()["HEALTHCHECK"][0]
    argv = __import__("json").loads(health.split("CMD", 1)[1].strip())
    argv[argv.index("--url") + 1] = f"{server.http}/up"
    assert argv[0] == "clarion"
    ok = subprocess.run([sys.executable, "-m", "clarion", *argv[1:]], cwd=ROOT, timeout=30)
    assert ok.returncode == 0
    server.stop()
    down = subprocess.run(
        [sys.executable, "-m", "clarion", *argv[1:]], cwd=ROOT, timeout=30, capture_output=True
    )
    assert down.returncode == 1


CONTAINER_ENV = {
    "CLARION_HOST": "0.0.0.0",
    "CLARION_PORT": "0",
    "CLARION_METRICS_PORT": "0",
    "CLARION_METRICS_HOST": "0.0.0.0",
    "PYTHONUNBUFFERED": "1",
}


def test_entrypoint_refuses_the_demo_app_on_all_interfaces() -> None:
    """The image listens on 0.0.0.0: without an app of its own it must not serve the demo
    app, whose secret is public."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    result = subprocess.run(
        [sys.executable, "-m", "clarion", "serve"],
        cwd=ROOT,
        env={**env, **CONTAINER_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "demo app" in result.stderr
    for hint in ("CLARION_APP_SECRET", "--allow-demo-app", "CLARION_ALLOW_DEMO_APP"):
        assert hint in result.stderr
    assert "Clarion listening" not in result.stdout


@pytest.mark.parametrize(
    "extra",
    [
        {"CLARION_APP_ID": "7", "CLARION_APP_KEY": "k7", "CLARION_APP_SECRET": "a-real-secret"},
        {"CLARION_ALLOW_DEMO_APP": "1"},
    ],
    ids=["own-app", "opted-in"],
)
def test_entrypoint_with_the_container_environment(extra: dict[str, str]) -> None:
    """ENTRYPOINT + CMD with the image's environment and an app (or the explicit opt-in)
    start a server on all interfaces."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    starts_on_all_interfaces(["serve"], {**env, **CONTAINER_ENV, **extra})


def starts_on_all_interfaces(argv: list[str], env: dict[str, str]) -> None:
    """``clarion *argv`` starts a server that listens on 0.0.0.0, and stops with exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "Clarion listening on" in line:
                assert "http://0.0.0.0:" in line
                break
        else:
            raise AssertionError("the server did not start")
    finally:
        process.terminate()
        process.wait(20)
    assert process.returncode == 0


def test_compose_file_has_redis_two_nodes_and_nginx() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "clarion-1", "clarion-2", "nginx"}
    for name in ("clarion-1", "clarion-2"):
        environment = services[name]["environment"]
        assert environment["CLARION_CLUSTER_ADAPTER"] == "redis"
        assert environment["CLARION_REDIS_URL"].startswith("redis://redis:")
        # The secret comes from the operator's environment; compose stops without it.
        assert environment["CLARION_APP_SECRET"].startswith("${CLARION_APP_SECRET:?")
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    for upstream in ("clarion-1:6001", "clarion-2:6001"):
        assert upstream in nginx
    assert "proxy_set_header Upgrade $http_upgrade" in nginx


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(ROOT / "deploy" / "clarion.service")
    service = unit["Service"]
    assert shlex.split(service["ExecStart"])[1:3] == ["serve", "--config"]
    assert service["KillSignal"] == "SIGTERM"
    assert "-HUP" in service["ExecReload"]
    assert int(service["LimitNOFILE"]) >= 100_000


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    import json
    import re

    from clarion import metrics

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "clarion-dashboard.json").read_text())
    names = set(re.findall(r"\b(clarion_[a-z_]+|process_[a-z_]+)", json.dumps(dashboard)))
    exported = {"process_resident_memory_bytes", "process_open_fds"}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str):
            exported |= {name, f"{name}_total", f"{name}_bucket"}
    exported |= {
        "clarion_http_requests_total",
        "clarion_connections",
        "clarion_channels",
        "clarion_subscriptions",
        "clarion_webhook_queue",
        "clarion_redis_up",
        "clarion_redis_roundtrip_seconds_bucket",
    }
    assert names and names <= exported, names - exported
