"""Clarion benchmark: fan-out, latency, memory per connection, connect rate, HTTP publish rate,
and (--scenarios more) presence churn, private subscribes, webhooks, metrics, cluster.

Every run starts a fresh server pinned to one core and runs the C load generator
(bench/loadgen.c, built here with gcc) pinned to the other, then stops the server.
Each measurement is repeated and the median reported; Clarion and a bare-asyncio
reference server (bench/reference_server.py) are measured alternately in the same
invocation, so fan-out is also given as a ratio Clarion/reference.

    .venv/bin/python bench/run.py              # everything, 3 repetitions
    .venv/bin/python bench/run.py --quick      # smoke run, about a minute
    .venv/bin/python bench/run.py --scenarios fanout --fanout-subs 1000 --reps 5
    .venv/bin/python bench/run.py --scenarios more       # issues 3-6 (needs redis-server)

See bench/README.md for what is measured and how to read the figures.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import hmac
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "build" / "loadgen"
RESULTS = BENCH / "results"

APP_ID, APP_KEY, APP_SECRET = "1", "app-key", "app-secret"
SERVERS = ("clarion", "reference")
SCENARIOS = ("fanout", "latency", "connect", "http")
# The scenarios of issues 3-6 (README, "More scenarios"): not in the default run.
MORE_SCENARIOS = ("presence", "private", "webhooks", "metrics", "cluster", "crossnode", "queries",
                  "admin")
SCENARIO_GROUPS = {"core": SCENARIOS, "more": MORE_SCENARIOS, "all": SCENARIOS + MORE_SCENARIOS}
# The Clarion set-ups each of them compares, in order (the first is the baseline of a ratio).
VARIANTS = {
    "presence": ("clarion",),
    "private": ("clarion",),
    "webhooks": ("no-webhooks", "webhooks"),
    "metrics": ("metrics-off", "metrics-on"),
    # Issue 12: the admin console on with nobody watching, and one console on the app.
    "admin": ("admin-off", "admin-idle", "admin-console"),
    "cluster": ("1-worker", "2-workers"),
    "crossnode": ("single-node", "redis-same-node", "cross-node"),
    # "-churn": a channel subscribed and unsubscribed --query-churn times a second meanwhile,
    # so that a listing can seldom be reused and is built afresh.
    "queries": ("memory", "redis", "memory-churn", "redis-churn"),
}
# The CPUs this script may use, read before it pins itself to the generator's core.
ALL_CPUS = sorted(os.sched_getaffinity(0))

# Targets from the issue.
FANOUT_RATIO_MIN = 0.9
RSS_PER_CONN_MAX_KIB = 4.0
CONNECT_RATE_MIN = 10_000.0
HTTP_PUBLISH_MIN = 30_000.0
# Targets of issues 3-6.
PRIVATE_SUBSCRIBE_MIN = 5_000.0
WEBHOOKS_RATIO_MIN = 0.95
METRICS_RATIO_MIN = 0.95
ADMIN_IDLE_RATIO_MIN = 0.98
ADMIN_CONSOLE_RATIO_MIN = 0.8
ADMIN_TOKEN = "bench-admin-token-0123456789"
CLUSTER_RATIO_MIN = 1.3
CROSSNODE_P50_EXTRA_MAX_MS = 2.0
QUERY_P99_MAX_MS = 5.0
WEBHOOK_EVENT_TYPES = ["channel_occupied", "channel_vacated", "client_event"]

# A run is flagged when other processes used more than this share of a pinned core.
FOREIGN_LOAD_WARN_PCT = 10.0
GEN_CPU_WARN_PCT = 85.0


# --------------------------------------------------------------------------------------
# building and checking the load generator
# --------------------------------------------------------------------------------------


def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lcrypto"]
    print("building the load generator:", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        sys.exit("bench: gcc is needed to build bench/loadgen.c (apt-get install gcc libssl-dev)")
    selftest()


def selftest() -> None:
    """The generator's MD5 and HMAC-SHA256 must agree with Python's."""
    out = subprocess.run(
        [str(LOADGEN), "--selftest", "--secret", APP_SECRET],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    inputs = [
        "",
        "abc",
        "0123456789" * 5 + "01234",
        "0123456789" * 5 + "012345",
        "0123456789" * 6 + "0123",
        "POST\n/apps/1/events\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&body_md5=0123456789abcdef0123456789abcdef",
    ]
    for text, line in zip(inputs, out, strict=True):
        md5 = hashlib.md5(text.encode()).hexdigest()
        mac = hmac.new(APP_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
        if line != f"{md5} {mac}":
            sys.exit(f"bench: loadgen self-test failed for {text!r}: {line}")


# --------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Server settings the benchmark needs, written only if this Clarion version has them: the
# generator opens every connection from 127.0.0.1, so the per-address cap must go.
CLARION_SERVER_OVERRIDES = {"max_connections_per_ip": 0}


# Environment of the servers: PYTHONPATH points at a snapshot of src/ when --ref is given.
SERVER_ENV: dict[str, str] = {}


def known_server_settings() -> set[str]:
    """The [server] settings of the Clarion under test (its tree may differ from ours)."""
    code = "from clarion.config import ServerSettings; print(*ServerSettings.__struct_fields__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **SERVER_ENV},
    )
    return set(done.stdout.split()) if done.returncode == 0 else set()


def clarion_config(port: int) -> str:
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}"]
    known = known_server_settings()
    for name, value in CLARION_SERVER_OVERRIDES.items():
        if name in known:
            lines.append(f"{name} = {json.dumps(value)}")
    lines += ["", "[[apps]]", f'id = "{APP_ID}"', f'key = "{APP_KEY}"', f'secret = "{APP_SECRET}"']
    return "\n".join(lines) + "\n"


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(
    kind: str, workdir: Path, cpu: int | None, tag: str,
    config: Callable[[int], str] | None = None, workers: int = 1, unpinned: bool = False,
) -> Server:
    """Start the reference server or Clarion (``config(port)``: its TOML, default the
    benchmark's) pinned to ``cpu`` (or, ``unpinned``, free on every core); wait until it
    answers and, with ``workers``, until every worker listens."""
    port = free_port()
    log = workdir / f"{tag}.log"
    if kind != "reference":
        path = workdir / f"{tag}.toml"
        path.write_text(config(port) if config else clarion_config(port))
        cmd = [sys.executable, "-m", "clarion", "serve", "--config", str(path),
               "--port", str(port)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
    else:
        cmd = [sys.executable, str(BENCH / "reference_server.py"), "--port", str(port)]

    def pin() -> None:
        if unpinned:
            os.sched_setaffinity(0, ALL_CPUS)
        elif cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin,
            env={**os.environ, **SERVER_ENV, "PYTHONUNBUFFERED": "1"},
        )
    server = Server(kind, process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited at start:\n{server.log_tail()}")
        if http_up(port) and (workers == 1 or listening_sockets(port) >= workers):
            return server
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"{kind} did not answer GET /up:\n{server.log_tail()}")


def listening_sockets(port: int) -> int:
    """Sockets listening on ``port`` (each worker of ``--workers`` has its own)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the workers of ``--workers``, their helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def http_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop_server(server: Server) -> int | None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# --------------------------------------------------------------------------------------
# set-ups of the "more" scenarios: several nodes, Redis, a webhook receiver
# --------------------------------------------------------------------------------------


@dataclass
class Helper:
    """A process a set-up needs besides Clarion: redis-server or the webhook receiver."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    core: int | None  # the core it is pinned to (None: any)


@dataclass
class Stack:
    """What one run measures: Clarion node(s) and their helpers."""

    nodes: list[Server]
    ws_port: int  # where the subscribers connect
    pub_port: int  # where publishes and queries go
    server_pids: list[int]  # CPU and RSS summed by the generator (workers included)
    helpers: list[Helper] = field(default_factory=list)
    pinned: bool = True  # server side on --server-cpu, generator on --gen-cpu
    metrics_port: int | None = None  # scraped during the run


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def clarion_toml(
    port: int, *, server: dict[str, Any] | None = None, app: dict[str, Any] | None = None,
    webhooks: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None, admin: dict[str, Any] | None = None,
) -> str:
    """A Clarion config: the benchmark's app, no per-address cap, and what a set-up adds."""
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}", "max_connections_per_ip = 0"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (server or {}).items()]
    for table, values in (("metrics", metrics), ("cluster", cluster), ("admin", admin)):
        if values:
            lines += ["", f"[{table}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    lines += ["", "[[apps]]", f'id = "{APP_ID}"', f'key = "{APP_KEY}"', f'secret = "{APP_SECRET}"']
    lines += [f"{k} = {toml_value(v)}" for k, v in (app or {}).items()]
    for hook in webhooks or []:
        lines += ["", "[[apps.webhooks]]", *(f"{k} = {toml_value(v)}" for k, v in hook.items())]
    return "\n".join(lines) + "\n"


def pinning(cpu: int | None) -> Callable[[], None]:
    """preexec_fn: pin to ``cpu``, or (None) free on every core (this script is pinned)."""

    def pin() -> None:
        os.sched_setaffinity(0, {cpu} if cpu is not None else ALL_CPUS)

    return pin


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, probe: bytes = b"",
              expect: bytes = b"") -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if not probe:
                    return
                sock.sendall(probe)
                if sock.recv(64).startswith(expect):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} does not answer on port {port}")


def start_redis(opts: argparse.Namespace, workdir: Path, tag: str, cpu: int | None) -> Helper:
    """A fresh redis-server of our own on a free port (never the system one), no persistence."""
    if shutil.which(opts.redis_server) is None:
        raise RuntimeError(f"{opts.redis_server} not found: the cluster scenarios need Redis")
    port = free_port()
    log = workdir / f"{tag}-redis.log"
    cmd = [opts.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=pinning(cpu))
    helper = Helper("redis", process, port, log, cpu)
    try:
        wait_port(port, process, "redis-server", b"PING\r\n", b"+PONG")
    except RuntimeError:
        stop_helper(helper)
        raise
    return helper


def start_receiver(workdir: Path, tag: str, cpu: int | None) -> Helper:
    """The webhook receiver (the generator in --receiver mode), on the generator's core."""
    port = free_port()
    log = workdir / f"{tag}-receiver.json"
    cmd = [str(LOADGEN), "--receiver", "--port", str(port)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    helper = Helper("receiver", process, port, log, cpu)
    try:
        wait_port(port, process, "webhook receiver")
    except RuntimeError:
        stop_helper(helper)
        raise
    return helper


def stop_helper(helper: Helper) -> None:
    if helper.process.poll() is None:
        helper.process.send_signal(signal.SIGTERM)
        try:
            helper.process.wait(10)
        except subprocess.TimeoutExpired:
            helper.process.kill()
            helper.process.wait()


def start_stack(
    case: Case, kind: str, opts: argparse.Namespace, workdir: Path, tag: str
) -> Stack:
    """Start what ``kind`` of ``case`` measures; stop what was started if anything fails."""
    if case.scenario in SCENARIOS:
        server = start_server(kind, workdir, opts.server_cpu, tag)
        return Stack([server], server.port, server.port, [server.pid])
    stack = Stack([], 0, 0, [])
    try:
        build_stack(stack, case, kind, opts, workdir, tag)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def build_stack(
    stack: Stack, case: Case, kind: str, opts: argparse.Namespace, workdir: Path, tag: str
) -> None:
    server_cpu, gen_cpu = opts.server_cpu, opts.gen_cpu
    server: dict[str, Any] = {}
    if opts.no_log_connections:
        server["log_connections"] = False
    app: dict[str, Any] = {}
    webhooks: list[dict[str, Any]] = []
    metrics_cfg: dict[str, Any] = {"port": 0}  # on (Clarion's default), on any free port
    cluster: dict[str, Any] = {}
    admin: dict[str, Any] = {}
    scenario = case.scenario
    if scenario == "presence":
        # Room for the members still joining (the channel itself stays at --churn-members).
        app["max_presence_members"] = opts.churn_members + 300
    elif scenario == "webhooks":
        app["client_events"] = True
        receiver = start_receiver(workdir, tag, gen_cpu)
        stack.helpers.append(receiver)
        if kind == "webhooks":
            webhooks.append({"url": f"http://127.0.0.1:{receiver.port}/webhook",
                             "event_types": WEBHOOK_EVENT_TYPES})
    elif scenario == "metrics":
        if kind == "metrics-off":
            metrics_cfg = {"enabled": False}
        else:
            stack.metrics_port = free_port()
            metrics_cfg = {"enabled": True, "port": stack.metrics_port}
    elif scenario == "admin" and kind != "admin-off":
        admin = {"port": free_port(), "token": ADMIN_TOKEN}
    elif scenario == "mix":
        # bench/curves.py's mixed workload: presence rooms whose members send client events
        app["client_events"] = True
    redis_kinds = {"1-worker", "2-workers", "redis-same-node", "cross-node", "redis",
                   "redis-churn"}
    if kind in redis_kinds:
        stack.pinned = scenario != "cluster"
        redis = start_redis(opts, workdir, tag, server_cpu if stack.pinned else None)
        stack.helpers.append(redis)
        cluster = {"adapter": "redis", "redis_url": f"redis://127.0.0.1:{redis.port}/0"}

    def config(port: int) -> str:
        return clarion_toml(port, server=server, app=app, webhooks=webhooks,
                            metrics=metrics_cfg, cluster=cluster, admin=admin)

    workers = 2 if kind == "2-workers" else 1
    names = ("node-a", "node-b") if kind == "cross-node" else ("clarion",)
    for name in names:
        node = start_server(name, workdir, server_cpu, f"{tag}-{name}", config, workers,
                            unpinned=not stack.pinned)
        stack.nodes.append(node)
    stack.pub_port = stack.nodes[0].port  # node A takes the publishes
    stack.ws_port = stack.nodes[-1].port  # node B the subscribers
    for node in stack.nodes:
        stack.server_pids += [node.pid, *descendants(node.pid)]
    if kind == "admin-console":
        stack.helpers.append(start_console(admin["port"], workdir, tag, gen_cpu))


def start_console(port: int, workdir: Path, tag: str, cpu: int | None) -> Helper:
    """An admin console watching the benchmark's app (bench/admin_console.py)."""
    log = workdir / f"{tag}-console.json"
    cmd = [sys.executable, str(Path(__file__).with_name("admin_console.py")), str(port),
           ADMIN_TOKEN, APP_ID]
    deadline = time.monotonic() + 10
    out = log.open("wb")
    process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                               preexec_fn=pinning(cpu))
    out.close()
    helper = Helper("console", process, port, log, cpu)
    while b"watching" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_helper(helper)
            raise RuntimeError(f"the admin console did not open:\n{log.read_text()}")
        time.sleep(0.05)
    return helper


def stop_stack(stack: Stack) -> tuple[list[str], dict[str, Any]]:
    """Stop the nodes, then the helpers; return the issues and what the helpers report."""
    issues: list[str] = []
    extra: dict[str, Any] = {}
    for node in stack.nodes:
        alive = node.process.poll() is None
        code = stop_server(node)
        if not alive:
            issues.append(f"server died (exit {code}):\n{node.log_tail()}")
    for helper in stack.helpers:
        stop_helper(helper)
        if helper.name == "receiver":
            try:
                extra["receiver"] = json.loads(helper.log.read_text())["receiver"]
            except (OSError, ValueError, KeyError):
                issues.append("the webhook receiver reported nothing")
        if helper.name == "console":
            try:
                extra["console"] = json.loads(helper.log.read_text().splitlines()[-1])["console"]
            except (OSError, ValueError, KeyError, IndexError):
                issues.append("the admin console reported nothing")
    return issues, extra


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds while a run goes on, as Prometheus would."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.done = threading.Event()
        self.count = 0
        self.errors = 0
        self.max_s = 0.0
        self.bytes = 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    self.bytes = len(reply.read())
            except OSError:
                self.errors += 1
                continue
            self.count += 1
            self.max_s = max(self.max_s, time.monotonic() - started)

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join(10)
        return {"count": self.count, "errors": self.errors, "max_ms": 1000 * self.max_s,
                "bytes": self.bytes, "interval_s": self.interval}


# --------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    result = []
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3].isdigit():
                values = [int(v) for v in line.split()[1:9]]
                total = sum(values)
                result.append((total - values[3] - values[4], total))
    return result


def core_busy(interval: float) -> list[float]:
    before = cpu_times()
    time.sleep(interval)
    after = cpu_times()
    pairs = zip(before, after, strict=False)
    return [100.0 * (b1 - b0) / max(1, t1 - t0) for (b0, t0), (b1, t1) in pairs]


def wait_quiet(cores: list[int], threshold: float, max_wait: float) -> float:
    """Wait until the pinned cores are idle (other users' work); return the seconds waited."""
    start = time.monotonic()
    announced = False
    while True:
        busy = core_busy(0.3)
        if all(busy[c] < threshold for c in cores if c < len(busy)):
            return time.monotonic() - start
        if time.monotonic() - start > max_wait:
            print(f"    (cores still busy {busy} after {max_wait:.0f} s; running anyway)",
                  flush=True)
            return time.monotonic() - start
        if not announced:
            print(f"    waiting for other load to pass (cores busy {busy})", flush=True)
            announced = True
        time.sleep(0.5)


def snapshot_src(ref: str, dest: Path) -> None:
    """Benchmark src/ as of a commit: unpack it and put it first on the servers' path."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    SERVER_ENV["PYTHONPATH"] = str(dest / "src")
    where = subprocess.run(
        [sys.executable, "-c", "import clarion; print(clarion.__file__)"], cwd=ROOT,
        capture_output=True, text=True, env={**os.environ, **SERVER_ENV},
    ).stdout.strip()
    if not where.startswith(str(dest)):
        sys.exit(f"bench: --ref {ref}: the servers would import clarion from {where!r}")
    print(f"benchmarking src/ of {ref} ({git_describe(ref)}), unpacked in {dest}", flush=True)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < need:
        sys.exit(f"bench: RLIMIT_NOFILE hard limit is {hard}, {need} are needed: raise ulimit -Hn")


def git_describe(ref: str | None) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", ref or "HEAD"], cwd=ROOT, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        if ref:
            return commit
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        return commit + ("+uncommitted-src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------------------
# cases and runs
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    scenario: str
    n: int
    servers: tuple[str, ...]
    args: list[str]
    label: str


@dataclass
class Run:
    case: Case
    server: str
    rep: int
    data: dict[str, Any]
    issues: list[str] = field(default_factory=list)
    # share of each pinned core (percent) used by other processes during the window
    foreign: dict[str, float] = field(default_factory=dict)
    # how the run was laid out: pinned or not, and the core of each --aux-pid (Redis, ...)
    pinned: bool = True
    aux: list[tuple[str, int | None]] = field(default_factory=list)


def build_cases(opts: argparse.Namespace) -> list[Case]:
    timing = ["--warmup", str(opts.warmup), "--duration", str(opts.duration)]
    cases: list[Case] = []
    for scenario in opts.scenarios:
        if scenario == "fanout":
            for n in opts.fanout_subs:
                cases.append(Case(
                    "fanout", n, opts.servers,
                    ["--subs", str(n), "--publish", "flood", "--publishers", str(opts.publishers),
                     "--inflight", str(opts.inflight), "--lag", str(opts.lag),
                     "--nap-us", str(opts.nap_us), "--settle", "0.5", *timing],
                    f"fan-out, {n:,} subscribers",
                ))
        elif scenario == "latency":
            for n in opts.latency_subs:
                cases.append(Case(
                    "latency", n, opts.servers,
                    ["--subs", str(n), "--publish", "rate", "--rate", str(opts.latency_rate),
                     "--publishers", "2", "--settle", "0.5", *timing],
                    f"latency, {n:,} subscribers, {opts.latency_rate:,.0f} deliveries/s",
                ))
        elif scenario == "connect":
            n = opts.connect_subs
            cases.append(Case(
                "connect", n, opts.servers,
                ["--subs", str(n), "--publish", "none", "--settle", str(opts.settle),
                 "--concurrency", str(opts.concurrency)],
                f"connect+subscribe and idle RSS, {n:,} connections",
            ))
        elif scenario == "http":
            cases.append(Case(
                "http", 0, tuple(s for s in opts.servers if s == "clarion") or ("clarion",),
                ["--subs", "0", "--publish", "flood", "--publishers", str(opts.http_conns),
                 "--inflight", "1", "--settle", "0", *timing],
                f"signed HTTP publish, 0 subscribers, {opts.http_conns} keep-alive connections",
            ))
        else:
            cases += more_cases(scenario, opts, timing)
    return cases


def more_cases(scenario: str, opts: argparse.Namespace, timing: list[str]) -> list[Case]:
    """The cases of the scenarios of issues 3-6 (README, "More scenarios")."""
    variants = VARIANTS[scenario]
    n = opts.compare_subs
    fanout = ["--subs", str(n), "--publish", "flood", "--publishers", str(opts.publishers),
              "--inflight", str(opts.inflight), "--lag", str(opts.lag),
              "--nap-us", str(opts.nap_us), "--settle", "0.5", *timing]
    churn = ["--subs", "0", "--churn-members", str(opts.churn_members), "--settle", "0",
             *timing]
    if scenario == "presence":
        return [
            Case("presence", 0, variants,
                 [*churn, "--churn-rate", "0", "--churn-inflight", str(opts.churn_inflight),
                  "--nap-us", str(opts.churn_nap_us)],
                 f"presence churn, {opts.churn_members} members, as fast as it goes"),
            Case("presence", 0, variants, [*churn, "--churn-rate", str(opts.churn_rate)],
                 f"presence churn, {opts.churn_members} members, {opts.churn_rate:,.0f} joins/s"),
        ]
    if scenario == "private":
        return [Case("private", opts.private_subs, variants,
                     ["--subs", str(opts.private_subs), "--channel", "private-bench",
                      "--publish", "none", "--settle", "0.5", "--concurrency",
                      str(opts.concurrency)],
                     f"connect+private subscribe, {opts.private_subs:,} connections")]
    if scenario == "webhooks":
        side = ["--side-churn", str(opts.webhook_churn),
                "--side-client-events", str(opts.webhook_client_events)]
        return [Case("webhooks", n, variants, [*fanout, *side],
                     f"fan-out, {n:,} subscribers, webhooks off/on")]
    if scenario == "metrics":
        return [Case("metrics", n, variants, fanout, f"fan-out, {n:,} subscribers, metrics off/on")]
    if scenario == "admin":
        return [Case("admin", n, variants, fanout,
                     f"fan-out, {n:,} subscribers, admin off / on idle / one console open")]
    if scenario == "cluster":
        args = [*fanout, "--concurrency", str(opts.redis_concurrency)]
        args[args.index("--publishers") + 1] = str(opts.cluster_publishers)
        args[args.index("--nap-us") + 1] = str(opts.cluster_nap_us)
        return [Case("cluster", n, variants, args,
                     f"fan-out, {n:,} subscribers, Redis, 1 / 2 workers, unpinned")]
    if scenario == "crossnode":
        m = opts.crossnode_subs
        return [Case("crossnode", m, variants,
                     ["--subs", str(m), "--publish", "rate", "--rate", str(opts.latency_rate),
                      "--publishers", "2", "--concurrency", str(opts.redis_concurrency),
                      "--settle", "0.5", *timing],
                     f"latency, {m:,} subscribers, {opts.latency_rate:,.0f} deliveries/s, "
                     "single / cross-node")]
    if scenario == "queries":
        m = opts.query_channels
        return [Case("queries", m, variants,
                     ["--subs", str(m), "--distinct-channels", "--publish", "none",
                      "--query", "both", "--query-info", "subscription_count",
                      "--concurrency", str(opts.redis_concurrency), "--settle", "0.5", *timing],
                     f"HTTP state queries, {m:,} occupied channels")]
    raise ValueError(scenario)


def run_once(
    case: Case, kind: str, rep: int, opts: argparse.Namespace, workdir: Path
) -> Run:
    cores = [c for c in (opts.server_cpu, opts.gen_cpu) if c is not None]
    if opts.quiet_wait > 0 and cores:
        wait_quiet(cores, opts.quiet_threshold, opts.quiet_wait)
    tag = f"{case.scenario}-{case.n}-{kind}-{rep}-{time.monotonic_ns()}"
    try:
        stack = start_stack(case, kind, opts, workdir, tag)
    except RuntimeError as exc:
        time.sleep(2)  # e.g. a tree caught in the middle of an edit: give it a moment
        return Run(case, kind, rep, {"ok": False}, [f"server died at start: {exc}"])
    cmd = [str(LOADGEN), "--port", str(stack.ws_port), "--app-id", APP_ID, "--key", APP_KEY,
           "--secret", APP_SECRET, "--server-pid", ",".join(map(str, stack.server_pids)),
           *case.args]
    if stack.pub_port != stack.ws_port:
        cmd += ["--pub-port", str(stack.pub_port)]
    if kind.endswith("-churn"):
        cmd += ["--side-churn", str(opts.query_churn)]
    if stack.helpers:
        cmd += ["--aux-pid", ",".join(str(h.process.pid) for h in stack.helpers)]
    if opts.gen_cpu is not None and stack.pinned:
        cmd += ["--cpu", str(opts.gen_cpu)]
    issues: list[str] = []
    scraper = None
    if stack.metrics_port is not None:
        scraper = Scraper(stack.metrics_port, opts.scrape_interval)
        scraper.start()
    try:
        budget = 180 + opts.warmup + opts.duration
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                              preexec_fn=None if stack.pinned else pinning(None))
        try:
            data: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError:
            data = {"ok": False, "first_error": (done.stderr or done.stdout).strip()[:500]}
        if done.returncode != 0:
            issues.append(f"loadgen exited {done.returncode}: {data.get('first_error', '')}")
    except subprocess.TimeoutExpired:
        data = {"ok": False}
        issues.append("loadgen timed out")
    finally:
        scraped = scraper.stop() if scraper is not None else None
        stopped, extra = stop_stack(stack)
    issues += stopped
    data.update(extra)
    if scraped is not None:
        data["scrapes"] = scraped
        if not scraped["count"] or scraped["errors"]:
            issues.append(f"metrics scrapes: {scraped['count']} ok, {scraped['errors']} failed")
    for node in stack.nodes:
        log_text = node.log.read_text(errors="replace")
        if "Traceback" in log_text or " ERROR " in log_text:
            issues.append("server logged errors:\n" + node.log_tail())
        elif case.scenario in MORE_SCENARIOS:
            # JSON log lines: quote the first errors and warnings, and tell those of the
            # teardown (the generator resets every connection at once) from the others
            report = data.get("report_unix_s")
            for level in ("error", "warning"):
                lines = [line for line in log_text.splitlines() if f'"level":"{level}"' in line]
                late = [line for line in lines if report and log_time(line) >= report]
                for group, when in ((late, " at teardown"), (
                        [line for line in lines if line not in late], "")):
                    if group:
                        quoted = "\n".join(group[:3])
                        issues.append(f"server logged {len(group)} {level}(s){when}:\n{quoted}")
    run = Run(case, kind, rep, data, issues, pinned=stack.pinned,
              aux=[(h.name, h.core) for h in stack.helpers])
    check_run(run, opts)
    return run


def measure(
    case: Case, kind: str, rep: int, opts: argparse.Namespace, workdir: Path
) -> Run:
    """One run, again if the server died and again if other load spoilt it (cleanest kept)."""

    def attempt() -> Run:
        run = run_once(case, kind, rep, opts, workdir)
        print("    " + one_line(run), flush=True)
        for issue in run.issues:
            print("    ! " + issue.replace("\n", "\n      "), flush=True)
        return run

    run = attempt()
    for _ in range(opts.retries):
        if not fatal(run):
            break
        print("    running it again", flush=True)
        run = attempt()
    redone = False
    for _ in range(opts.redo_noisy):
        if fatal(run) or not noisy(run):
            break
        print("    other processes used the pinned cores: running it again", flush=True)
        again = attempt()
        redone = True
        if not fatal(again) and again.foreign.get("server", 0) <= run.foreign.get("server", 0):
            run = again
    if redone:
        print(f"    kept: {one_line(run)}", flush=True)
    return run


def fatal(run: Run) -> bool:
    """The run measured nothing usable (the server died, e.g. killed by someone else)."""
    return not run.data.get("ok") or any(
        i.startswith(("server died", "loadgen")) for i in run.issues
    )


def noisy(run: Run) -> bool:
    """Other processes took a real share of the server's core, or starved the generator."""
    f = run.foreign
    return f.get("server", 0) > FOREIGN_LOAD_WARN_PCT or (
        f.get("generator", 0) > FOREIGN_LOAD_WARN_PCT and f.get("generator_core_busy", 0) > 95
    )


def check_run(run: Run, opts: argparse.Namespace) -> None:
    """Note everything that makes a figure suspect."""
    d = run.data
    issues = run.issues
    for key in ("closes", "pusher_errors", "subscription_errors", "bad_http_status"):
        if d.get(key):
            issues.append(f"{key}: {d[key]}")
    for key in ("http_errors", "unexpected_disconnects"):
        if d.get(key):
            issues.append(f"{key}: {d[key]}")
    if d.get("subscribed", run.case.n) < run.case.n:
        issues.append(f"only {d.get('subscribed')} of {run.case.n} subscribed")
    pub = d.get("publish")
    if pub and pub.get("undelivered"):
        issues.append(f"{pub['undelivered']} deliveries never arrived")
    window = window_of(d)
    if window.get("gen_cpu_pct", 0) > GEN_CPU_WARN_PCT:
        issues.append(f"load generator at {window['gen_cpu_pct']:.0f}% CPU: it may be the limit")
    churn = d.get("churn")
    if churn:
        if churn["added_seen"] < churn["completed"]:
            issues.append(f"the observer missed {churn['completed'] - churn['added_seen']} "
                          f"of {churn['completed']} member_added")
        if churn["removed_seen"] < churn["leaves"]:
            issues.append(f"the observer missed {churn['leaves'] - churn['removed_seen']} "
                          f"of {churn['leaves']} member_removed")
        if churn["failed"]:
            issues.append(f"{churn['failed']} joins failed")
        if churn["late"]:
            issues.append(f"{churn['late']} joins were due with 256 in flight and were skipped")
    if run.server == "webhooks" and not (d.get("receiver") or {}).get("events"):
        issues.append("no webhook reached the receiver")
    busy = window.get("core_busy_pct") or []
    own = own_cpu_pct(d)
    aux = window.get("aux_cpu_pct") or []
    if not run.pinned:
        # Everything shares every core: what is not ours is somebody else's.
        if busy and own[0] is not None and own[1] is not None:
            total = sum(busy[c] for c in ALL_CPUS if c < len(busy))
            foreign = max(0.0, total - own[0] - own[1] - sum(aux))
            run.foreign["server"] = run.foreign["total"] = foreign
            if foreign > FOREIGN_LOAD_WARN_PCT:
                issues.append(f"other processes used ~{foreign:.0f}% of a core")
        return
    for label, core, mine in (
        ("server", opts.server_cpu, own[0]), ("generator", opts.gen_cpu, own[1])
    ):
        if core is None or core >= len(busy) or mine is None:
            continue
        # helpers pinned to the same core (Redis, the webhook receiver) are ours too
        mine += sum(used for used, (_, where) in zip(aux, run.aux, strict=False) if where == core)
        # /proc/stat is sampled at each tick, so a few % either way is noise (never < 0)
        foreign = max(0.0, busy[core] - mine)
        run.foreign[label] = foreign
        run.foreign[label + "_core_busy"] = busy[core]
        if foreign > FOREIGN_LOAD_WARN_PCT:
            issues.append(f"other processes used ~{foreign:.0f}% of the {label} core (CPU {core})")


def log_time(line: str) -> float:
    """Unix time of a JSON log line of Clarion ("time":"2026-01-01T00:00:00.000Z")."""
    try:
        stamp = json.loads(line)["time"]
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(
            "0" + stamp[19:-1])
    except (ValueError, KeyError, TypeError):
        return 0.0


def window_of(d: dict[str, Any]) -> dict[str, Any]:
    """The measured window of a run: publishing, churn, queries, else the connect phase."""
    for key in ("publish", "churn", "query"):
        if d.get(key):
            return dict(d[key])
    return dict(d.get("connect") or {})


def own_cpu_pct(d: dict[str, Any]) -> tuple[float | None, float | None]:
    for key in ("publish", "churn", "query"):
        window = d.get(key)
        if window:
            return window["server_cpu_pct"], window["gen_cpu_pct"]
    con = d.get("connect")
    if con and con.get("seconds"):
        return (100 * con["server_cpu_s"] / con["seconds"], 100 * con["gen_cpu_s"] / con["seconds"])
    return None, None


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def metrics(run: Run) -> dict[str, float]:
    """The figures of one run, by name."""
    d = run.data
    out: dict[str, float] = {}
    n = run.case.n
    con = d.get("connect") or {}
    rss = d.get("rss_kib") or {}
    if n and rss.get("idle", -1) > 0 and rss.get("before", -1) > 0:
        out["rss_per_conn_kib"] = (rss["idle"] - rss["before"]) / n
    if n and con.get("seconds"):
        out["connect_per_s"] = con["per_s"]
        out["server_us_per_connect"] = 1e6 * con["server_cpu_s"] / n
        out["connect_gen_cpu_pct"] = 100 * con["gen_cpu_s"] / con["seconds"]
        out["connect_server_cpu_pct"] = 100 * con["server_cpu_s"] / con["seconds"]
    pub = d.get("publish")
    if pub:
        out["deliveries_per_s"] = pub["deliveries_per_s"]
        out["publishes_per_s"] = pub["publishes_per_s"]
        out["server_cpu_pct"] = pub["server_cpu_pct"]
        out["gen_cpu_pct"] = pub["gen_cpu_pct"]
        if pub["server_cpu_pct"] > 0 and pub["mode"] == "flood":
            # what one fully used server core would do: robust to other load on the core
            key = "publishes" if n == 0 else "deliveries"
            out[f"{key}_per_server_cpu_s"] = pub[f"{key}_per_s"] * 100 / pub["server_cpu_pct"]
        lat = pub.get("latency_ms") or {}
        for q in ("p50", "p99", "p999", "max"):
            if lat.get(q, -1) >= 0:
                out[f"latency_{q}_ms"] = lat[q]
        if n and pub["deliveries_per_s"] and pub["mode"] == "flood":
            out["server_us_per_delivery"] = (
                1e4 * pub["server_cpu_pct"] / pub["deliveries_per_s"]
            )
    if run.case.scenario in MORE_SCENARIOS:
        out.update(more_metrics(run))
    return out


def more_metrics(run: Run) -> dict[str, float]:
    """The figures of the scenarios of issues 3-6."""
    d = run.data
    out: dict[str, float] = {}
    churn = d.get("churn")
    if churn:
        out["joins_per_s"] = churn["joins_per_s"]
        out["server_cpu_pct"] = churn["server_cpu_pct"]
        out["gen_cpu_pct"] = churn["gen_cpu_pct"]
        if churn["joins_per_s"]:
            out["server_us_per_join"] = 1e4 * churn["server_cpu_pct"] / churn["joins_per_s"]
        for name in ("added", "removed", "join"):
            for q in ("p50", "p99", "max"):
                value = churn[f"{name}_ms"][q]
                if value >= 0:
                    out[f"{name}_{q}_ms"] = value
    query = d.get("query")
    if query:
        out["server_cpu_pct"] = query["server_cpu_pct"]
        out["gen_cpu_pct"] = query["gen_cpu_pct"]
        out["list_kib"] = query["list_bytes"] / 1024
        for name in ("list", "channel"):
            hist = query[f"{name}_ms"]
            out[f"{name}_requests"] = hist["n"]
            for q in ("p50", "p99", "max"):
                if hist[q] >= 0:
                    out[f"{name}_{q}_ms"] = hist[q]
    window = window_of(d)
    aux = window.get("aux_cpu_pct") or []
    for (name, _), used in zip(run.aux, aux, strict=False):
        out[f"{name}_cpu_pct"] = used
    each = window.get("server_cpu_pct_each") or []
    if len(each) > 1:
        # the two busiest of the server's processes (the workers, or nodes A and B)
        busy = sorted(each, reverse=True)
        out["process_cpu_pct_1st"] = busy[0]
        out["process_cpu_pct_2nd"] = busy[1]
    receiver = d.get("receiver")
    if receiver:
        out["webhook_requests"] = receiver["requests"]
        out["webhook_events"] = receiver["events"]
    scrapes = d.get("scrapes")
    if scrapes:
        out["scrapes"] = scrapes["count"]
        out["scrape_max_ms"] = scrapes["max_ms"]
    return out


def summarize(runs: list[Run]) -> dict[str, dict[str, dict[str, float]]]:
    """{case label: {server: {metric: median, metric_min, metric_max}}}."""
    grouped: dict[str, dict[str, list[dict[str, float]]]] = {}
    for run in runs:
        grouped.setdefault(run.case.label, {}).setdefault(run.server, []).append(metrics(run))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for label, by_server in grouped.items():
        summary[label] = {}
        for server, rows in by_server.items():
            stats: dict[str, float] = {}
            for key in sorted({k for row in rows for k in row}):
                values = [row[key] for row in rows if key in row]
                stats[key] = statistics.median(values)
                stats[key + "_min"] = min(values)
                stats[key + "_max"] = max(values)
                stats[key + "_n"] = len(values)
            summary[label][server] = stats
    return summary


def paired_ratio(
    runs: list[Run], case: Case, key: str, top: str = "clarion", bottom: str = "reference"
) -> list[float]:
    """top/bottom per repetition (the runs of a repetition are adjacent in time)."""
    return [a / b for a, b in paired(runs, case, key, top, bottom) if b]


def paired(
    runs: list[Run], case: Case, key: str, first: str, second: str
) -> list[tuple[float, float]]:
    """(first, second) figures per repetition."""
    by_rep: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.case is case and key in (m := metrics(run)):
            by_rep.setdefault(run.rep, {})[run.server] = m[key]
    return [
        (pair[first], pair[second]) for pair in by_rep.values() if first in pair and second in pair
    ]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def rate_of(case: Case) -> float:
    return float(case.args[case.args.index("--rate") + 1])


def verdicts(
    cases: list[Case], runs: list[Run], summary: dict[str, dict[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    """The target rows: what, Clarion, reference, ratio, target, PASS/FAIL."""
    out: list[dict[str, Any]] = []

    def get(case: Case, server: str, key: str) -> float | None:
        return summary.get(case.label, {}).get(server, {}).get(key)

    for case in cases:
        if case.scenario == "fanout":
            clarion = get(case, "clarion", "deliveries_per_s")
            ref = get(case, "reference", "deliveries_per_s")
            ratios = paired_ratio(runs, case, "deliveries_per_s")
            ratio = statistics.median(ratios) if ratios else None
            cpu_ratios = paired_ratio(runs, case, "deliveries_per_server_cpu_s")
            cpu_ratio = statistics.median(cpu_ratios) if cpu_ratios else None
            out.append({
                "what": f"fan-out deliveries/s, {case.n:,} subs", "clarion": fmt(clarion),
                "reference": fmt(ref), "ratio": fmt(ratio, 2),
                "ratio_cpu": fmt(cpu_ratio, 2),
                "target": f">= {FANOUT_RATIO_MIN:.2f}x reference",
                "pass": None if ratio is None else ratio >= FANOUT_RATIO_MIN,
                "values": {"clarion": clarion, "reference": ref, "ratio": ratio,
                           "ratios": ratios, "ratio_per_server_cpu_s": cpu_ratio,
                           "ratios_per_server_cpu_s": cpu_ratios},
            })
        elif case.scenario == "latency":
            cells = {}
            for server in ("clarion", "reference"):
                p50 = get(case, server, "latency_p50_ms")
                p99 = get(case, server, "latency_p99_ms")
                cells[server] = "-" if p50 is None else f"{p50:.1f} / {p99:.1f}"
            out.append({
                "what": f"latency p50 / p99 ms, {case.n:,} subs at {fmt(rate_of(case))}"
                " deliveries/s",
                "clarion": cells["clarion"], "reference": cells["reference"], "ratio": "",
                "target": "(no target)", "pass": None,
                "values": {s: {q: get(case, s, f"latency_{q}_ms") for q in ("p50", "p99")}
                           for s in ("clarion", "reference")},
            })
        elif case.scenario == "connect":
            rss = get(case, "clarion", "rss_per_conn_kib")
            out.append({
                "what": f"RSS per idle subscribed connection, {case.n:,} conns",
                "clarion": f"{fmt(rss, 2)} KiB",
                "reference": f"{fmt(get(case, 'reference', 'rss_per_conn_kib'), 2)} KiB",
                "ratio": "", "target": f"<= {RSS_PER_CONN_MAX_KIB:g} KiB",
                "pass": None if rss is None else rss <= RSS_PER_CONN_MAX_KIB,
                "values": {"clarion": rss,
                           "reference": get(case, "reference", "rss_per_conn_kib")},
            })
            rate = get(case, "clarion", "connect_per_s")
            out.append({
                "what": f"connect+subscribe/s, {case.n:,} conns", "clarion": fmt(rate),
                "reference": fmt(get(case, "reference", "connect_per_s")), "ratio": "",
                "target": f">= {CONNECT_RATE_MIN:,.0f}/s",
                "pass": None if rate is None else rate >= CONNECT_RATE_MIN,
                "values": {"clarion": rate, "reference": get(case, "reference", "connect_per_s")},
            })
        elif case.scenario == "http":
            rate = get(case, "clarion", "publishes_per_s")
            out.append({
                "what": "signed HTTP publishes/s, " + case.label.split(", ", 1)[1],
                "clarion": fmt(rate), "reference": "-", "ratio": "",
                "target": f">= {HTTP_PUBLISH_MIN:,.0f}/s",
                "pass": None if rate is None else rate >= HTTP_PUBLISH_MIN,
                "values": {"clarion": rate},
            })
        elif case.scenario in MORE_SCENARIOS:
            out += more_verdicts(case, runs, get)
    return out


def more_verdicts(
    case: Case, runs: list[Run], get: Callable[[Case, str, str], float | None]
) -> list[dict[str, Any]]:
    """The target rows of the scenarios of issues 3-6: what, value, compared with, ratio."""
    rows: list[dict[str, Any]] = []
    base, *others = case.servers
    mine = [r for r in runs if r.case is case]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def ratio_row(what: str, top: str, bottom: str, minimum: float, check: bool = True) -> None:
        ratios = paired_ratio(runs, case, "deliveries_per_s", top, bottom)
        cpu = paired_ratio(runs, case, "deliveries_per_server_cpu_s", top, bottom)
        ratio = statistics.median(ratios) if ratios else None
        cpu_ratio = statistics.median(cpu) if cpu else None
        rows.append({
            "what": what, "value": f"{top} {fmt(get(case, top, 'deliveries_per_s'))}",
            "compared": f"{bottom} {fmt(get(case, bottom, 'deliveries_per_s'))}",
            "ratio": fmt(ratio, 2), "ratio_cpu": fmt(cpu_ratio, 2),
            "target": f">= {minimum:.2f}x {bottom}",
            "pass": None if ratio is None else ratio >= minimum and check,
            "values": {"ratio": ratio, "ratios": ratios, "ratio_per_server_cpu_s": cpu_ratio,
                       "ratios_per_server_cpu_s": cpu,
                       top: get(case, top, "deliveries_per_s"),
                       bottom: get(case, bottom, "deliveries_per_s")},
        })

    if case.scenario == "presence":
        complete = bool(mine) and all(
            r.data.get("churn") and not any(
                i.startswith(("the observer missed", "subscription_errors")) or "joins" in i
                for i in r.issues)
            for r in mine
        )
        joins = get(case, base, "joins_per_s")
        p50, p99 = get(case, base, "added_p50_ms"), get(case, base, "added_p99_ms")
        rate = float(case.args[case.args.index("--churn-rate") + 1])
        members = case.label.split(", ")[1]
        if rate == 0:
            what = f"presence churn joins/s (max), {members}"
            value, compared = fmt(joins), f"member_added p50/p99 {ms(p50)}/{ms(p99)} ms"
        else:
            what = f"presence member_added p50/p99 ms, {members}, {rate:,.0f} joins/s"
            value, compared = f"{ms(p50)} / {ms(p99)}", f"{fmt(joins)} joins/s done"
        rows.append({
            "what": what, "value": value, "compared": compared, "ratio": "", "ratio_cpu": "",
            "target": "(figures) every join/leave seen", "pass": complete if mine else None,
            "values": {"joins_per_s": joins, "added_p50_ms": p50, "added_p99_ms": p99,
                       "removed_p99_ms": get(case, base, "removed_p99_ms"),
                       "complete": complete},
        })
    elif case.scenario == "private":
        rate = get(case, base, "connect_per_s")
        rows.append({
            "what": f"connect+private subscribe/s, {case.n:,} conns", "value": fmt(rate),
            "compared": f"{fmt(get(case, base, 'server_us_per_connect'))} us server CPU/conn",
            "ratio": "", "ratio_cpu": "", "target": f">= {PRIVATE_SUBSCRIBE_MIN:,.0f}/s",
            "pass": None if rate is None else rate >= PRIVATE_SUBSCRIBE_MIN,
            "values": {"connect_per_s": rate},
        })
    elif case.scenario == "webhooks":
        arrived = all((r.data.get("receiver") or {}).get("events") for r in mine
                      if r.server == "webhooks")
        ratio_row(f"fan-out deliveries/s, {case.n:,} subs, webhooks on/off", "webhooks",
                  "no-webhooks", WEBHOOKS_RATIO_MIN, arrived)
    elif case.scenario == "metrics":
        ratio_row(f"fan-out deliveries/s, {case.n:,} subs, metrics on/off", "metrics-on",
                  "metrics-off", METRICS_RATIO_MIN)
    elif case.scenario == "admin":
        ratio_row(f"fan-out deliveries/s, {case.n:,} subs, admin on (no console)/off",
                  "admin-idle", "admin-off", ADMIN_IDLE_RATIO_MIN)
        ratio_row(f"fan-out deliveries/s, {case.n:,} subs, one console open/admin off",
                  "admin-console", "admin-off", ADMIN_CONSOLE_RATIO_MIN)
    elif case.scenario == "cluster":
        ratio_row(f"fan-out deliveries/s, {case.n:,} subs, Redis, 2 workers / 1", "2-workers",
                  "1-worker", CLUSTER_RATIO_MIN)
    elif case.scenario == "crossnode":
        for other in others:
            diffs = [a - b for a, b in paired(runs, case, "latency_p50_ms", other, base)]
            diff = statistics.median(diffs) if diffs else None
            gated = other == "cross-node"
            rows.append({
                "what": f"publish->deliver p50/p99 ms, {case.n:,} subs, {other} vs {base}",
                "value": f"{ms(get(case, other, 'latency_p50_ms'))} / "
                         f"{ms(get(case, other, 'latency_p99_ms'))}",
                "compared": f"{ms(get(case, base, 'latency_p50_ms'))} / "
                            f"{ms(get(case, base, 'latency_p99_ms'))}",
                "ratio": "-" if diff is None else f"p50 {diff:+.2f} ms", "ratio_cpu": "",
                "target": f"p50 <= +{CROSSNODE_P50_EXTRA_MAX_MS:g} ms" if gated else "(figures)",
                "pass": None if diff is None or not gated else diff <= CROSSNODE_P50_EXTRA_MAX_MS,
                "values": {"p50_diff_ms": diff, "p50_diffs_ms": diffs},
            })
    elif case.scenario == "queries":
        for variant in case.servers:
            for name, path in (("list", "/apps/1/channels"),
                               ("channel", "/apps/1/channels/{name}")):
                p99 = get(case, variant, f"{name}_p99_ms")
                rows.append({
                    "what": f"GET {path}?info=subscription_count p99, {case.n:,} channels, "
                            f"{variant}",
                    "value": f"{ms(p99)} ms",
                    "compared": f"p50 {ms(get(case, variant, f'{name}_p50_ms'))} ms",
                    "ratio": "", "ratio_cpu": "", "target": f"<= {QUERY_P99_MAX_MS:g} ms",
                    "pass": None if p99 is None else p99 <= QUERY_P99_MAX_MS,
                    "values": {"p99_ms": p99, "p50_ms": get(case, variant, f"{name}_p50_ms")},
                })
    for row in rows:
        row["group"] = "more"
    return rows


def detail_rows(
    cases: list[Case], summary: dict[str, dict[str, dict[str, float]]]
) -> list[list[str]]:
    rows = []
    for case in cases:
        for server in case.servers:
            s = summary.get(case.label, {}).get(server)
            if not s:
                continue

            def spread(key: str, digits: int = 0, s: dict[str, float] = s) -> str:
                if key not in s:
                    return "-"
                return (f"{fmt(s[key], digits)} ({fmt(s[key + '_min'], digits)}"
                        f"-{fmt(s[key + '_max'], digits)})")

            if case.scenario == "presence":
                main = spread("joins_per_s") + " joins/s"
                srv = fmt(s.get("server_cpu_pct"))
                gen = f"{fmt(s.get('gen_cpu_pct'))} (max {fmt(s.get('gen_cpu_pct_max'))})"
                extra = (f"member_added p50/p99/max {fmt(s.get('added_p50_ms'), 2)}/"
                         f"{fmt(s.get('added_p99_ms'), 2)}/{fmt(s.get('added_max_ms'), 2)} ms; "
                         f"member_removed p50/p99 {fmt(s.get('removed_p50_ms'), 2)}/"
                         f"{fmt(s.get('removed_p99_ms'), 2)} ms; connect->subscribed p99 "
                         f"{fmt(s.get('join_p99_ms'), 2)} ms; "
                         f"{fmt(s.get('server_us_per_join'))} us server CPU/join")
            elif case.scenario == "queries":
                main = (f"p99 list {spread('list_p99_ms', 2)} ms, "
                        f"channel {spread('channel_p99_ms', 2)} ms")
                srv = fmt(s.get("server_cpu_pct"))
                gen = f"{fmt(s.get('gen_cpu_pct'))} (max {fmt(s.get('gen_cpu_pct_max'))})"
                extra = (f"p50 list {fmt(s.get('list_p50_ms'), 2)} ms, channel "
                         f"{fmt(s.get('channel_p50_ms'), 2)} ms; max list "
                         f"{fmt(s.get('list_max_ms'), 1)} ms, channel "
                         f"{fmt(s.get('channel_max_ms'), 1)} ms; "
                         f"{fmt(s.get('list_requests'))}+{fmt(s.get('channel_requests'))} "
                         f"requests; list body {fmt(s.get('list_kib'))} KiB")
            elif case.scenario in ("connect", "private"):
                main = spread("connect_per_s") + " conn/s"
                srv = fmt(s.get("connect_server_cpu_pct"))
                gen = (f"{fmt(s.get('connect_gen_cpu_pct'))}"
                       f" (max {fmt(s.get('connect_gen_cpu_pct_max'))})")
                extra = (f"{fmt(s.get('server_us_per_connect'))} us server CPU/conn; "
                         f"RSS {spread('rss_per_conn_kib', 2)} KiB/conn")
            else:
                unit = " publishes/s" if case.scenario == "http" else " deliveries/s"
                key = "publishes_per_s" if case.scenario == "http" else "deliveries_per_s"
                main = spread(key) + unit
                srv = fmt(s.get("server_cpu_pct"))
                gen = f"{fmt(s.get('gen_cpu_pct'))} (max {fmt(s.get('gen_cpu_pct_max'))})"
                parts = []
                if "latency_p50_ms" in s:
                    parts.append(f"p50/p99/max {fmt(s['latency_p50_ms'], 1)}/"
                                 f"{fmt(s['latency_p99_ms'], 1)}/"
                                 f"{fmt(s.get('latency_max_ms'), 1)} ms")
                if "deliveries_per_server_cpu_s" in s:
                    parts.append(f"{fmt(s['deliveries_per_server_cpu_s'])} per server CPU-s")
                if "publishes_per_server_cpu_s" in s:
                    parts.append(f"{fmt(s['publishes_per_server_cpu_s'])} per server CPU-s")
                if "server_us_per_delivery" in s:
                    parts.append(f"{fmt(s['server_us_per_delivery'], 2)} us server CPU/delivery")
                if case.scenario == "fanout" and "rss_per_conn_kib" in s:
                    parts.append(f"idle RSS {fmt(s['rss_per_conn_kib'], 2)} KiB/conn")
                extra = "; ".join(parts)
            if case.scenario in MORE_SCENARIOS:
                extra = "; ".join(part for part in (extra, more_notes(s)) if part)
            rows.append([case.label, server, main, srv, gen, extra])
    return rows


def more_notes(s: dict[str, float]) -> str:
    parts = []
    if "process_cpu_pct_1st" in s:
        parts.append(f"busiest processes {fmt(s['process_cpu_pct_1st'])}% + "
                     f"{fmt(s['process_cpu_pct_2nd'])}% CPU")
    for name in ("redis", "receiver"):
        if f"{name}_cpu_pct" in s:
            parts.append(f"{name} {fmt(s[f'{name}_cpu_pct'], 1)}% CPU")
    if "webhook_events" in s:
        parts.append(f"{fmt(s['webhook_events'])} webhook events in "
                     f"{fmt(s['webhook_requests'])} requests")
    if "scrapes" in s:
        parts.append(f"{fmt(s['scrapes'])} scrapes (max {fmt(s['scrape_max_ms'], 1)} ms)")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark Clarion against a bare-asyncio reference server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repetition, short windows")
    parser.add_argument("--scenarios", default="core",
                        help="comma-separated scenarios or groups: core (" + ",".join(SCENARIOS)
                        + "), more (" + ",".join(MORE_SCENARIOS) + "), all")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of publishing before the window")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds in the window")
    parser.add_argument("--fanout-subs", type=int_list, default=[1000, 10000],
                        help="subscriber counts of the fan-out runs (comma-separated)")
    parser.add_argument("--latency-subs", type=int_list, default=[1000, 10000],
                        help="subscriber counts of the latency runs (comma-separated)")
    parser.add_argument("--latency-rate", type=float, default=20000,
                        help="deliveries/s in the latency runs")
    parser.add_argument("--connect-subs", type=int, default=10000,
                        help="connections opened in the connect+subscribe / RSS runs")
    parser.add_argument("--concurrency", type=int, default=256,
                        help="WebSocket handshakes in flight in the connect phase")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="idle seconds before the RSS of the connect scenario is read")
    parser.add_argument("--http-conns", type=int, default=64,
                        help="keep-alive connections of the HTTP publish runs")
    parser.add_argument("--publishers", type=int, default=4,
                        help="publishing connections in the fan-out runs")
    parser.add_argument("--inflight", type=int, default=2,
                        help="pipelined publishes per publishing connection (fan-out)")
    parser.add_argument("--lag", type=int, default=32,
                        help="events a subscriber may be behind before publishing pauses")
    parser.add_argument("--nap-us", type=int, default=1000,
                        help="fan-out: the generator sleeps this long after draining every "
                        "ready socket, so each read takes several frames (0: never)")
    parser.add_argument("--retries", type=int, default=2,
                        help="re-runs of a run whose server died or whose generator failed")
    parser.add_argument("--redo-noisy", type=int, default=2,
                        help="re-runs of a run during which other processes used more than "
                        f"{FOREIGN_LOAD_WARN_PCT:g}%% of the server's core (the cleanest is kept)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core the server is pinned to")
    parser.add_argument("--gen-cpu", type=int, default=1,
                        help="core the load generator (and this script) is pinned to")
    parser.add_argument("--quiet-threshold", type=float, default=15.0,
                        help="before each run, wait until both cores are below this busy %%")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="longest wait for quiet cores (0: do not wait)")
    parser.add_argument("--ref", help="benchmark src/ as of this git commit (e.g. HEAD) "
                        "instead of the working tree")
    parser.add_argument("--out", type=Path,
                        help="JSON result file (default: bench/results/bench-DATE-TIME.json)")
    more = parser.add_argument_group("the more scenarios (README, \"More scenarios\")")
    more.add_argument("--compare-subs", type=int, default=1000,
                      help="subscribers of the webhooks, metrics and cluster fan-out runs")
    more.add_argument("--private-subs", type=int, default=10000,
                      help="connections of the private-subscribe run")
    more.add_argument("--churn-members", type=int, default=100,
                      help="members kept on the presence channel (the observer included)")
    more.add_argument("--churn-inflight", type=int, default=16,
                      help="joins in flight in the as-fast-as-it-goes presence churn")
    more.add_argument("--churn-nap-us", type=int, default=1000,
                      help="generator nap in the as-fast-as-it-goes churn (see --nap-us)")
    more.add_argument("--churn-rate", type=float, default=500,
                      help="joins/s of the fixed-rate presence churn (member_added latency)")
    more.add_argument("--webhook-churn", type=float, default=50,
                      help="webhooks runs: channels occupied and vacated per second")
    more.add_argument("--webhook-client-events", type=float, default=100,
                      help="webhooks runs: client events per second (5/s per connection)")
    more.add_argument("--scrape-interval", type=float, default=1.0,
                      help="metrics-on runs: seconds between two GET /metrics")
    more.add_argument("--cluster-publishers", type=int, default=8,
                      help="publishing connections of the cluster runs (spread over workers)")
    more.add_argument("--cluster-nap-us", type=int, default=1000,
                      help="generator nap of the cluster runs (see --nap-us)")
    more.add_argument("--crossnode-subs", type=int, default=1000,
                      help="subscribers of the cross-node latency runs (rate: --latency-rate)")
    more.add_argument("--query-channels", type=int, default=10000,
                      help="occupied channels (one subscriber each) of the query runs")
    more.add_argument("--query-churn", type=float, default=500,
                      help="queries runs, -churn variants: subscribe+unsubscribe per second")
    more.add_argument("--redis-concurrency", type=int, default=50,
                      help="handshakes in flight in the connect phase of the cluster, crossnode "
                      "and queries runs: redis-py's pool holds 100 connections and Clarion "
                      "takes a Redis outage for a full pool (README)")
    more.add_argument("--no-log-connections", action="store_true",
                      help="set [server] log_connections = false (default: Clarion's, on)")
    more.add_argument("--redis-server", default="redis-server",
                      help="redis-server binary (a fresh one on a free port per run)")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.reps = 1
        opts.warmup = 0.5
        opts.duration = 2.0
        opts.settle = 0.5
    chosen: list[str] = []
    for s in opts.scenarios.split(","):
        for name in SCENARIO_GROUPS.get(s, (s,) if s else ()):
            if name not in SCENARIOS + MORE_SCENARIOS:
                parser.error(f"unknown scenario {name!r}")
            if name not in chosen:
                chosen.append(name)
    opts.scenarios = chosen
    opts.servers = tuple(s for s in opts.servers.split(",") if s)
    for s in opts.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}")
    if (os.cpu_count() or 1) < 2:
        print("bench: fewer than 2 CPUs: server and load generator are not pinned")
        opts.server_cpu = opts.gen_cpu = None
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.ref:
        # Pin the ref to its commit now: others may commit while the benchmark runs.
        try:
            opts.ref = subprocess.run(
                ["git", "rev-parse", "--verify", opts.ref + "^{commit}"], cwd=ROOT,
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        except subprocess.CalledProcessError:
            sys.exit(f"bench: --ref {opts.ref} is not a commit")
    build_loadgen()
    selftest()
    need = max([*opts.fanout_subs, *opts.latency_subs, opts.connect_subs, opts.http_conns,
                opts.private_subs, opts.query_channels, opts.compare_subs]) + 512
    raise_nofile(need)
    if opts.gen_cpu is not None:
        # This script sleeps while runs go on; keep it off the server's core anyway.
        os.sched_setaffinity(0, {opts.gen_cpu})

    cases = build_cases(opts)
    total = sum(len(c.servers) for c in cases) * opts.reps
    print(f"Clarion benchmark: {len(cases)} cases x {opts.reps} repetitions = {total} runs; "
          f"server on CPU {opts.server_cpu}, load generator on CPU {opts.gen_cpu}", flush=True)
    started = time.time()
    runs: list[Run] = []
    count = 0
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        workdir = Path(tmp)
        if opts.ref:
            snapshot_src(opts.ref, workdir / "tree")
        for rep in range(opts.reps):
            for case in cases:
                # Alternate which server goes first so drift does not favour one of them.
                order = case.servers if rep % 2 == 0 else tuple(reversed(case.servers))
                for kind in order:
                    count += 1
                    print(f"[{count}/{total}] {case.label}: {kind}, repetition {rep + 1}",
                          flush=True)
                    run = measure(case, kind, rep, opts, workdir)
                    runs.append(run)

    summary = summarize(runs)
    targets = verdicts(cases, runs, summary)
    print()
    print(f"Medians of {opts.reps} repetition(s); commit {git_describe(opts.ref)}; "
          f"{cpu_model()}, {os.cpu_count()} CPUs")
    print()
    core = [t for t in targets if t.get("group") != "more"]
    more = [t for t in targets if t.get("group") == "more"]
    if core:
        print(table(
            [[t["what"], t["clarion"], t["reference"], t["ratio"], t.get("ratio_cpu", ""),
              t["target"], "" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")]
             for t in core],
            ["measurement", "Clarion", "reference", "ratio", "ratio/CPU-s", "target", "result"],
        ))
        print()
    if more:
        print(table(
            [[t["what"], t["value"], t["compared"], t["ratio"], t["ratio_cpu"], t["target"],
              "" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")]
             for t in more],
            ["measurement", "value", "compared with", "ratio", "ratio/CPU-s", "target",
             "result"],
        ))
        print()
    print(table(
        detail_rows(cases, summary),
        ["case", "server", "median (min-max)", "server CPU %", "loadgen CPU %", "notes"],
    ))
    flagged = [r for r in runs if r.issues]
    if flagged:
        print(f"\n{len(flagged)} of {len(runs)} runs had issues (see above and the JSON file).")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = opts.out or RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json")
    result = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "commit": git_describe(opts.ref),
            "python": sys.version.split()[0],
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "targets": targets,
        "summary": summary,
        "runs": [
            {"scenario": r.case.scenario, "case": r.case.label, "n": r.case.n,
             "server": r.server, "rep": r.rep, "loadgen_args": r.case.args,
             "metrics": metrics(r), "issues": r.issues, "foreign_load_pct": r.foreign,
             "raw": r.data}
            for r in runs
        ],
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nResults written to {out}")
    return 0


def one_line(run: Run) -> str:
    m = metrics(run)
    parts = []
    if "deliveries_per_s" in m and run.case.scenario != "http":
        parts.append(f"{m['deliveries_per_s']:,.0f} deliveries/s")
    if run.case.scenario == "http" and "publishes_per_s" in m:
        parts.append(f"{m['publishes_per_s']:,.0f} publishes/s")
    if "latency_p50_ms" in m:
        digits = 2 if run.case.scenario == "crossnode" else 1
        parts.append(f"p50 {m['latency_p50_ms']:.{digits}f} ms, "
                     f"p99 {m['latency_p99_ms']:.{digits}f} ms")
    if "joins_per_s" in m:
        parts.append(f"{m['joins_per_s']:,.0f} joins/s, member_added p50 "
                     f"{m.get('added_p50_ms', -1):.2f} ms, p99 {m.get('added_p99_ms', -1):.2f} ms")
    for name in ("list", "channel"):
        if f"{name}_p99_ms" in m:
            parts.append(f"{name} p50 {m[f'{name}_p50_ms']:.2f} ms, "
                         f"p99 {m[f'{name}_p99_ms']:.2f} ms")
    if "connect_per_s" in m:
        parts.append(f"{m['connect_per_s']:,.0f} conn/s")
    if "rss_per_conn_kib" in m:
        parts.append(f"{m['rss_per_conn_kib']:.2f} KiB/conn")
    if "server_cpu_pct" in m:
        parts.append(f"server {m['server_cpu_pct']:.0f}% CPU, loadgen {m['gen_cpu_pct']:.0f}%")
    elif "connect_server_cpu_pct" in m:
        parts.append(f"server {m['connect_server_cpu_pct']:.0f}% CPU, "
                     f"loadgen {m['connect_gen_cpu_pct']:.0f}%")
    if run.case.scenario in MORE_SCENARIOS and (notes := more_notes(m)):
        parts.append(notes)
    return "; ".join(parts) if parts else "no figures: " + str(run.data.get("first_error", ""))


if __name__ == "__main__":
    sys.exit(main())
