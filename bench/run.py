"""Clarion benchmark: fan-out, latency, memory per connection, connect rate, HTTP publish rate.

Every run starts a fresh server pinned to one core and runs the C load generator
(bench/loadgen.c, built here with gcc) pinned to the other, then stops the server.
Each measurement is repeated and the median reported; Clarion and a bare-asyncio
reference server (bench/reference_server.py) are measured alternately in the same
invocation, so fan-out is also given as a ratio Clarion/reference.

    .venv/bin/python bench/run.py              # everything, 3 repetitions
    .venv/bin/python bench/run.py --quick      # smoke run, about a minute
    .venv/bin/python bench/run.py --scenarios fanout --fanout-subs 1000 --reps 5

See bench/README.md for what is measured and how to read the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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

# Targets from the issue.
FANOUT_RATIO_MIN = 0.9
RSS_PER_CONN_MAX_KIB = 4.0
CONNECT_RATE_MIN = 10_000.0
HTTP_PUBLISH_MIN = 30_000.0

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
    cmd = ["gcc", "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC)]
    print("building the load generator:", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        sys.exit("bench: gcc is needed to build bench/loadgen.c (apt-get install gcc)")
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


def start_server(kind: str, workdir: Path, cpu: int | None, tag: str) -> Server:
    port = free_port()
    log = workdir / f"{tag}.log"
    if kind == "clarion":
        config = workdir / f"{tag}.toml"
        config.write_text(clarion_config(port))
        cmd = [sys.executable, "-m", "clarion", "serve", "--config", str(config),
               "--port", str(port)]
    else:
        cmd = [sys.executable, str(BENCH / "reference_server.py"), "--port", str(port)]

    def pin() -> None:
        if cpu is not None:
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
        if http_up(port):
            return server
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"{kind} did not answer GET /up:\n{server.log_tail()}")


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
    return cases


def run_once(
    case: Case, kind: str, rep: int, opts: argparse.Namespace, workdir: Path
) -> Run:
    cores = [c for c in (opts.server_cpu, opts.gen_cpu) if c is not None]
    if opts.quiet_wait > 0 and cores:
        wait_quiet(cores, opts.quiet_threshold, opts.quiet_wait)
    tag = f"{case.scenario}-{case.n}-{kind}-{rep}-{time.monotonic_ns()}"
    try:
        server = start_server(kind, workdir, opts.server_cpu, tag)
    except RuntimeError as exc:
        time.sleep(2)  # e.g. a tree caught in the middle of an edit: give it a moment
        return Run(case, kind, rep, {"ok": False}, [f"server died at start: {exc}"])
    cmd = [str(LOADGEN), "--port", str(server.port), "--app-id", APP_ID, "--key", APP_KEY,
           "--secret", APP_SECRET, "--server-pid", str(server.pid), *case.args]
    if opts.gen_cpu is not None:
        cmd += ["--cpu", str(opts.gen_cpu)]
    issues: list[str] = []
    try:
        budget = 180 + opts.warmup + opts.duration
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
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
        alive = server.process.poll() is None
        code = stop_server(server)
    if not alive:
        issues.append(f"server died (exit {code}):\n{server.log_tail()}")
    log_text = server.log.read_text(errors="replace")
    if "Traceback" in log_text or " ERROR " in log_text:
        issues.append("server logged errors:\n" + server.log_tail())
    run = Run(case, kind, rep, data, issues)
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
    if pub:
        if pub.get("undelivered"):
            issues.append(f"{pub['undelivered']} deliveries never arrived")
        if pub["gen_cpu_pct"] > GEN_CPU_WARN_PCT:
            issues.append(f"load generator at {pub['gen_cpu_pct']:.0f}% CPU: it may be the limit")
        window = pub
    else:
        window = d.get("connect", {})
    busy = window.get("core_busy_pct") or []
    own = own_cpu_pct(d)
    for label, core, mine in (
        ("server", opts.server_cpu, own[0]), ("generator", opts.gen_cpu, own[1])
    ):
        if core is None or core >= len(busy) or mine is None:
            continue
        # /proc/stat is sampled at each tick, so a few % either way is noise (never < 0)
        foreign = max(0.0, busy[core] - mine)
        run.foreign[label] = foreign
        run.foreign[label + "_core_busy"] = busy[core]
        if foreign > FOREIGN_LOAD_WARN_PCT:
            issues.append(f"other processes used ~{foreign:.0f}% of the {label} core (CPU {core})")


def own_cpu_pct(d: dict[str, Any]) -> tuple[float | None, float | None]:
    pub = d.get("publish")
    if pub:
        return pub["server_cpu_pct"], pub["gen_cpu_pct"]
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


def paired_ratio(runs: list[Run], case: Case, key: str) -> list[float]:
    """Clarion/reference per repetition (the two runs of a repetition are adjacent in time)."""
    by_rep: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.case is case and key in (m := metrics(run)):
            by_rep.setdefault(run.rep, {})[run.server] = m[key]
    return [
        pair["clarion"] / pair["reference"]
        for pair in by_rep.values()
        if "clarion" in pair and pair.get("reference")
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
    return out


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

            if case.scenario == "connect":
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
            rows.append([case.label, server, main, srv, gen, extra])
    return rows


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
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated subset of " + ",".join(SCENARIOS))
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
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.reps = 1
        opts.warmup = 0.5
        opts.duration = 2.0
        opts.settle = 0.5
    opts.scenarios = [s for s in opts.scenarios.split(",") if s]
    opts.servers = tuple(s for s in opts.servers.split(",") if s)
    for s in opts.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
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
    need = max([*opts.fanout_subs, *opts.latency_subs, opts.connect_subs, opts.http_conns]) + 256
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
    print(table(
        [[t["what"], t["clarion"], t["reference"], t["ratio"], t.get("ratio_cpu", ""),
          t["target"], "" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")]
         for t in targets],
        ["measurement", "Clarion", "reference", "ratio", "ratio/CPU-s", "target", "result"],
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
        parts.append(f"p50 {m['latency_p50_ms']:.1f} ms, p99 {m['latency_p99_ms']:.1f} ms")
    if "connect_per_s" in m:
        parts.append(f"{m['connect_per_s']:,.0f} conn/s")
    if "rss_per_conn_kib" in m:
        parts.append(f"{m['rss_per_conn_kib']:.2f} KiB/conn")
    if "server_cpu_pct" in m:
        parts.append(f"server {m['server_cpu_pct']:.0f}% CPU, loadgen {m['gen_cpu_pct']:.0f}%")
    elif "connect_server_cpu_pct" in m:
        parts.append(f"server {m['connect_server_cpu_pct']:.0f}% CPU, "
                     f"loadgen {m['connect_gen_cpu_pct']:.0f}%")
    return "; ".join(parts) if parts else "no figures: " + str(run.data.get("first_error", ""))


if __name__ == "__main__":
    sys.exit(main())
