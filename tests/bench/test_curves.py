"""Smoke test of the benchmark's plotting harness (bench/curves.py) so that it does not rot:
its quick mode drives a real Clarion with the C load generator (a few hundred connections,
seconds), writes the JSON of its points and draws the PNGs. The figures themselves are the
benchmark's business (docs/performance.md), not a test's: here they need only exist.

Needs gcc and OpenSSL's headers (the generator is C, built by bench/run.py); without them
the test is skipped, unless CLARION_REQUIRE_BENCH=1 (CI) makes that a failure. The Redis
part also needs redis-server (CLARION_REQUIRE_REDIS=1 likewise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CURVES = ROOT / "bench" / "curves.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def need(ok: bool, message: str, env: str) -> None:
    if ok:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{message} ({env}=1)")
    pytest.skip(message)


def has_libcrypto_headers() -> bool:
    return any(Path(p, "openssl", "hmac.h").exists()
               for p in ("/usr/include", "/usr/local/include"))


def quick(tmp_path: Path, parts: str) -> dict[str, Any]:
    need(shutil.which("gcc") is not None and has_libcrypto_headers(),
         "gcc and OpenSSL's headers (libssl-dev) build the benchmark's load generator",
         "CLARION_REQUIRE_BENCH")
    out = tmp_path / "curves.json"
    done = subprocess.run(
        [sys.executable, str(CURVES), "--quick", "--parts", parts, "--out", str(out),
         "--plot-dir", str(tmp_path / "png")],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def median(point: dict[str, Any], key: str) -> float:
    assert point.get(key), f"{key} missing in {point}"
    return float(point[key]["median"])


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert 5_000 < len(data) < 100_000, (path, len(data))


def test_fanout_and_mixed_workload_curves_are_measured_and_drawn(tmp_path: Path) -> None:
    result = quick(tmp_path, "fanout,mix")
    fanout = result["parts"]["fanout"]["points"]
    assert [p["n"] for p in fanout] == [300]
    for point in fanout:
        assert median(point, "deliveries_per_s") > 0
        assert median(point, "server_us_per_delivery") > 0
    (mix,) = result["parts"]["mix"]["points"]
    # 200 members in rooms of 10, one client event per member per second, 100 publishes/s:
    # both kinds arrive, each at the other members of its room, and none is lost
    assert median(mix, "client_events_per_s") > 50
    assert median(mix, "publishes_per_s") > 25
    assert median(mix, "deliveries_per_s") > 5 * median(mix, "messages_in_per_s")
    assert median(mix, "undelivered") == 0
    assert median(mix, "client_p99_ms") > 0 and median(mix, "publish_p99_ms") > 0
    for name in ("fanout.png", "mix.png"):
        assert_png(tmp_path / "png" / name)
    # the capacity plan is computed from that JSON (bench/capacity.py)
    plan = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "capacity.py"), str(tmp_path / "curves.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert plan.returncode == 0, plan.stderr
    assert "| mixed workload: server CPU per delivered message |" in plan.stdout
    # 9 room-mates per client event + 100 publishes/s x 10 members / 200 connections
    assert "| mixed workload: deliveries per connection per second | 14.0 |" in plan.stdout


def test_redis_traffic_of_a_node_is_measured(tmp_path: Path) -> None:
    need(shutil.which("redis-server") is not None,
         "redis-server is not on the PATH: the Redis part of the benchmark needs it",
         "CLARION_REQUIRE_REDIS")
    result = quick(tmp_path, "redis")
    (run,) = result["parts"]["redis"]["runs"]
    assert run["ok"]
    # a publish or a client event is one PUBLISH for Redis; each join runs a script
    assert run["publishing"]["by_command_per_s"].get("publish", 0) > 0
    assert run["commands_per_message"] > 0.5
    assert run["commands_per_connection"] > 0
    assert "info" not in run["rest"]["by_command_per_s"]
