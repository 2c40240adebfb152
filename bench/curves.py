"""Clarion scaling curves, plots and the figures of the capacity plan (issue #14).

Sweeps one variable per part, with bench/run.py's machinery (a fresh server per run pinned
to one core, the C generator on the other, medians of --reps, Clarion and the reference
server alternated in the same invocation), writes every point to one JSON file, and draws
one PNG per part from it:

    fanout   deliveries/s against subscribers (one channel), Clarion and reference
    latency  publish->deliver p50/p99/p99.9 against delivery rate (--latency-subs subscribers)
    memory   server RSS and connect+subscribe/s against connections held (one run gives both)
    workers  deliveries/s of `--workers 1` and `--workers 2` (Redis adapter, unpinned)
    mix      a real app's shape: 10,000 connections in 1,000 presence rooms of 10, a client
             event per user per second, 2,000 signed publishes/s over the rooms; server CPU
             per delivered message and p99 (A/B against --ab REF when given)
    redis    Redis commands/s and Redis CPU of one node on the Redis adapter, at rest and
             per publish (INFO commandstats / INFO cpu of a bench Redis)

    .venv/bin/python bench/curves.py                       # every part, 3 repetitions
    .venv/bin/python bench/curves.py --parts fanout,memory --reps 5
    .venv/bin/python bench/curves.py --parts mix --ab main  # A/B: working tree vs main
    .venv/bin/python bench/curves.py --ref HEAD~3           # another commit's src/
    .venv/bin/python bench/curves.py --plot bench/results/curves-X.json --plot-dir docs/performance
    .venv/bin/python bench/curves.py --quick --plot-dir /tmp/p   # seconds; the smoke test

See docs/performance.md ("Scaling curves" and "Capacity plan") for how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: servers, generator, runs, figures

PARTS = ("fanout", "latency", "memory", "workers", "mix", "redis")
# One process here may hold 20,000 open files: the server needs one per connection plus
# its own, so the largest sweeps stop at 19,000.
FULL = {
    "fanout": [100, 1000, 5000, 10000, 19000],
    "latency": [5000, 20000, 50000, 100000],
    "memory": [1000, 5000, 10000, 19000],
    "workers": [1000, 10000],
    "redis": [1000, 10000],
}
QUICK = {
    "fanout": [300],
    "latency": [2000, 5000],
    "memory": [100, 300],
    "workers": [100],
    "redis": [100],
}


# --------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------


def base_opts(args: argparse.Namespace) -> argparse.Namespace:
    """run.py's options, with this script's timing and noise settings."""
    argv = ["--reps", str(args.reps), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--quiet-wait", str(args.quiet_wait),
            "--redo-noisy", str(args.redo_noisy), "--retries", "1",
            "--servers", args.servers]
    opts = bench.parse_args(argv)
    opts.settle = args.settle
    return opts


class Trees:
    """Which src/ each kind of server runs: the working tree (or --ref), and --ab's."""

    def __init__(self, workdir: Path, ref: str | None, ab: str | None) -> None:
        self.env: dict[str, dict[str, str]] = {"main": {}}
        if ref:
            self.env["main"] = self.unpack(ref, workdir / "tree-ref")
        if ab:
            self.env["baseline"] = self.unpack(ab, workdir / "tree-ab")

    @staticmethod
    def unpack(commit: str, dest: Path) -> dict[str, str]:
        saved = dict(bench.SERVER_ENV)
        bench.snapshot_src(commit, dest)
        env = dict(bench.SERVER_ENV)
        bench.SERVER_ENV.clear()
        bench.SERVER_ENV.update(saved)
        return env

    def use(self, kind: str) -> None:
        bench.SERVER_ENV.clear()
        bench.SERVER_ENV.update(self.env["baseline" if kind == "baseline" else "main"])


def run_cases(
    cases: list[bench.Case], opts: argparse.Namespace, workdir: Path, trees: Trees,
    progress: list[int],
) -> list[bench.Run]:
    """Every case --reps times, servers alternated within a repetition (run.py's order)."""
    runs: list[bench.Run] = []
    for rep in range(opts.reps):
        for case in cases:
            order = case.servers if rep % 2 == 0 else tuple(reversed(case.servers))
            for kind in order:
                progress[0] += 1
                print(f"[{progress[0]}] {case.label}: {kind}, repetition {rep + 1}", flush=True)
                trees.use(kind)
                runs.append(bench.measure(case, kind, rep, opts, workdir))
    return runs


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def points(
    cases: list[bench.Case], runs: list[bench.Run], keys: list[str],
    extra: Any = None,
) -> list[dict[str, Any]]:
    """Per case and server: median/min/max of each metric over the repetitions."""
    out = []
    for case in cases:
        for server in case.servers:
            mine = [r for r in runs if r.case is case and r.server == server]
            # foreign_server_pct: the share of the server's core other processes took
            figures = [bench.metrics(r) | (extra(r) if extra else {})
                       | {f"foreign_{k}_pct": v for k, v in r.foreign.items()
                          if k in ("server", "generator")}
                       for r in mine]
            row: dict[str, Any] = {"case": case.label, "n": case.n, "server": server,
                                   "issues": sum(1 for r in mine if r.issues)}
            for key in [*keys, "foreign_server_pct", "foreign_generator_pct"]:
                row[key] = stats([f[key] for f in figures if key in f])
            out.append(row)
    return out


def ratios(cases: list[bench.Case], runs: list[bench.Run], top: str,
           bottom: str) -> dict[str, dict[int, dict[str, float] | None]]:
    """top/bottom per repetition, of deliveries/s and of deliveries per server CPU-s."""
    return {name: {c.n: stats(bench.paired_ratio(runs, c, key, top, bottom)) for c in cases}
            for name, key in (("ratio", "deliveries_per_s"),
                              ("ratio_per_cpu", "deliveries_per_server_cpu_s"))}


def part_fanout(opts: argparse.Namespace, ns: list[int], ctx: Any) -> dict[str, Any]:
    opts.scenarios, opts.fanout_subs = ["fanout"], ns
    cases = bench.build_cases(opts)
    runs = run_cases(cases, opts, *ctx)
    return {"x": "subscribers on one channel",
            "points": points(cases, runs, ["deliveries_per_s", "deliveries_per_server_cpu_s",
                                           "server_us_per_delivery", "server_cpu_pct"]),
            **ratios(cases, runs, "clarion", "reference")}


def part_latency(opts: argparse.Namespace, rates: list[int], ctx: Any,
                 subs: int) -> dict[str, Any]:
    cases = []
    for rate in rates:
        opts.scenarios, opts.latency_subs, opts.latency_rate = ["latency"], [subs], rate
        cases += bench.build_cases(opts)
    runs = run_cases(cases, opts, *ctx)
    for case in cases:  # the x of this curve (the runs are done: n was the subscribers)
        case.n = rate_of(case)
    return {"x": f"deliveries/s to {subs:,} subscribers on one channel", "subs": subs,
            "points": points(cases, runs, ["latency_p50_ms", "latency_p99_ms",
                                           "latency_p999_ms", "latency_max_ms",
                                           "deliveries_per_s", "server_cpu_pct"])}


def rate_of(case: bench.Case) -> int:
    return int(float(case.args[case.args.index("--rate") + 1]))


def part_memory(opts: argparse.Namespace, ns: list[int], ctx: Any) -> dict[str, Any]:
    cases = []
    for n in ns:
        opts.scenarios, opts.connect_subs = ["connect"], n
        cases += bench.build_cases(opts)

    def rss(r: bench.Run) -> dict[str, float]:
        kib = (r.data.get("rss_kib") or {})
        out = {}
        if kib.get("idle", -1) > 0:
            out["rss_idle_mib"] = kib["idle"] / 1024
        if kib.get("before", -1) > 0:
            out["rss_before_mib"] = kib["before"] / 1024
        return out

    runs = run_cases(cases, opts, *ctx)
    return {"x": "connections held (subscribed, idle)",
            "points": points(cases, runs, ["rss_idle_mib", "rss_before_mib", "rss_per_conn_kib",
                                           "connect_per_s", "server_us_per_connect"], rss)}


def part_workers(opts: argparse.Namespace, ns: list[int], ctx: Any) -> dict[str, Any]:
    cases = []
    for n in ns:
        opts.compare_subs = n
        timing = ["--warmup", str(opts.warmup), "--duration", str(opts.duration)]
        cases += bench.more_cases("cluster", opts, timing)
    runs = run_cases(cases, opts, *ctx)
    return {"x": "subscribers on one channel (Redis adapter, unpinned)",
            "points": points(cases, runs, ["deliveries_per_s", "deliveries_per_server_cpu_s",
                                           "server_cpu_pct", "redis_cpu_pct"]),
            **ratios(cases, runs, "2-workers", "1-worker")}


def mix_case(args: argparse.Namespace, opts: argparse.Namespace) -> bench.Case:
    conns, room = args.mix_conns, args.mix_room
    servers = ("clarion", "baseline") if args.ab else ("clarion",)
    return bench.Case(
        "mix", conns, servers,
        ["--subs", str(conns), "--channel", "presence-mix", "--distinct-channels",
         "--group", str(room), "--publish", "rate", "--rate", str(args.mix_publishes * room),
         "--publishers", "4", "--client-rate", str(args.mix_client_rate),
         "--concurrency", str(opts.concurrency), "--settle", "0.5",
         "--warmup", str(opts.warmup), "--duration", str(opts.duration)],
        f"mixed: {conns:,} connections in presence rooms of {room}, "
        f"{args.mix_client_rate:g} client event/s per user, {args.mix_publishes:,} publishes/s",
    )


def mix_metrics(r: bench.Run) -> dict[str, float]:
    d = r.data
    pub, client = d.get("publish") or {}, d.get("client") or {}
    out: dict[str, float] = {}
    if not pub or not client:
        return out
    total = pub["deliveries_per_s"] + client["deliveries_per_s"]
    out["messages_in_per_s"] = pub["publishes_per_s"] + client["sent_per_s"]
    out["publishes_per_s"] = pub["publishes_per_s"]
    out["client_events_per_s"] = client["sent_per_s"]
    out["deliveries_per_s"] = total
    out["server_cpu_pct"] = pub["server_cpu_pct"]
    if total:
        out["server_us_per_delivery"] = 1e4 * pub["server_cpu_pct"] / total
    for name, hist in (("all", client["all_latency_ms"]), ("publish", pub["latency_ms"]),
                       ("client", client["latency_ms"])):
        for q in ("p50", "p99", "p999"):
            if hist.get(q, -1) >= 0:
                out[f"{name}_{q}_ms"] = hist[q]
    out["undelivered"] = pub.get("undelivered", 0) + client.get("undelivered", 0)
    return out


def part_mix(args: argparse.Namespace, opts: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    case = mix_case(args, opts)
    runs = run_cases([case], opts, *ctx)
    keys = ["deliveries_per_s", "messages_in_per_s", "publishes_per_s", "client_events_per_s",
            "server_cpu_pct", "server_us_per_delivery", "all_p50_ms", "all_p99_ms",
            "all_p999_ms", "publish_p99_ms", "client_p99_ms", "undelivered"]
    out: dict[str, Any] = {"label": case.label, "args": case.args,
                           "points": points([case], runs, keys, mix_metrics),
                           "ab": trees_label(args)}
    if args.ab:
        for key in ("server_us_per_delivery", "all_p99_ms"):
            pairs = []
            for rep in range(opts.reps):
                pair = {r.server: mix_metrics(r).get(key) for r in runs if r.rep == rep}
                if pair.get("clarion") and pair.get("baseline"):
                    pairs.append(pair["clarion"] / pair["baseline"])
            out[f"ratio_{key}"] = stats(pairs)
    return out


def trees_label(args: argparse.Namespace) -> dict[str, str]:
    return {"clarion": bench.git_describe(args.ref),
            **({"baseline": bench.git_describe(args.ab)} if args.ab else {})}


# --------------------------------------------------------------------------------------
# Redis traffic of one node
# --------------------------------------------------------------------------------------


def redis_info(port: int, section: str) -> dict[str, str]:
    """INFO <section> of a bench Redis as {field: value} (inline command, RESP bulk reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        size = int(head[1:])
        while len(rest) < size:
            rest += sock.recv(65536)
    out = {}
    for line in rest[:size].decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def redis_sample(port: int) -> dict[str, Any]:
    calls: dict[str, int] = {}
    for key, value in redis_info(port, "commandstats").items():
        fields = dict(part.split("=") for part in value.split(","))
        calls[key.removeprefix("cmdstat_")] = int(fields["calls"])
    cpu = redis_info(port, "cpu")
    return {"t": time.monotonic(), "calls": calls,
            "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}


def redis_window(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    dt = b["t"] - a["t"]
    # INFO is this script's own sampling, not the node's traffic
    by = {k: (b["calls"].get(k, 0) - a["calls"].get(k, 0)) / dt for k in b["calls"]
          if k != "info"}
    by = {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0}
    return {"seconds": dt, "commands_per_s": sum(by.values()), "by_command_per_s": by,
            "cpu_pct": 100 * (b["cpu_s"] - a["cpu_s"]) / dt}


def redis_once(args: argparse.Namespace, opts: argparse.Namespace, n: int, workdir: Path,
               rep: int) -> dict[str, Any]:
    """One node on the Redis adapter, n members in presence rooms of --mix-room: Redis
    traffic while they join (per connection), while they idle (--redis-rest s: the lease,
    the connection counts), then while --redis-publishes/s and --redis-client-rate client
    events/s per connection go (per message: both are one frame for Redis pub/sub)."""
    tag = f"redis-{n}-{rep}-{time.monotonic_ns()}"
    redis = bench.start_redis(opts, workdir, tag, opts.server_cpu)
    node = None
    try:
        url = f"redis://127.0.0.1:{redis.port}/0"

        def config(port: int) -> str:
            return bench.clarion_toml(port, app={"client_events": True},
                                      cluster={"adapter": "redis", "redis_url": url})

        node = bench.start_server("clarion", workdir, opts.server_cpu, tag, config)
        pids = [node.pid, *bench.descendants(node.pid)]
        room = args.mix_room
        cmd = [str(bench.LOADGEN), "--port", str(node.port), "--app-id", bench.APP_ID,
               "--key", bench.APP_KEY, "--secret", bench.APP_SECRET,
               "--server-pid", ",".join(map(str, pids)), "--aux-pid", str(redis.process.pid),
               "--subs", str(n), "--channel", "presence-room", "--distinct-channels",
               "--group", str(room), "--client-rate", str(args.redis_client_rate),
               "--concurrency", str(opts.redis_concurrency),
               "--settle", str(args.redis_rest), "--publish", "rate",
               "--rate", str(args.redis_publishes * room), "--publishers", "2",
               "--warmup", str(opts.warmup), "--duration", str(opts.duration), "--markers"]
        if opts.gen_cpu is not None:
            cmd += ["--cpu", str(opts.gen_cpu)]
        samples: dict[str, dict[str, Any]] = {"launch": redis_sample(redis.port)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None and proc.stdout is not None
        out_text: list[str] = []
        reader = threading.Thread(target=lambda: out_text.append(proc.stdout.read()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        for line in proc.stderr:
            mark = line.strip()
            if mark in ("idle-start", "idle-end", "window-start", "window-end"):
                samples[mark] = redis_sample(redis.port)
        proc.wait(120)
        reader.join(10)
        data = json.loads("".join(out_text) or "{}")
        pub = data.get("publish") or {}
        client = data.get("client") or {}
        result: dict[str, Any] = {"n": n, "rep": rep, "ok": bool(data.get("ok"))}
        if "idle-start" in samples and n:
            # the connect phase: every connection's subscribe (a script) and the rest
            connect = redis_window(samples["launch"], samples["idle-start"])
            result["connect"] = connect
            result["commands_per_connection"] = connect["commands_per_s"] * connect[
                "seconds"] / n
            result["redis_cpu_us_per_connection"] = 1e4 * connect["cpu_pct"] * connect[
                "seconds"] / n
        if "idle-start" in samples and "idle-end" in samples:
            result["rest"] = redis_window(samples["idle-start"], samples["idle-end"])
        if "window-start" in samples and "window-end" in samples and pub:
            busy = redis_window(samples["window-start"], samples["window-end"])
            busy["publishes_per_s"] = pub["publishes_per_s"]
            busy["client_events_per_s"] = client.get("sent_per_s", 0.0)
            busy["deliveries_per_s"] = pub["deliveries_per_s"] + client.get(
                "deliveries_per_s", 0.0)
            busy["node_cpu_pct"] = pub["server_cpu_pct"]
            result["publishing"] = busy
            per = busy["publishes_per_s"] + busy["client_events_per_s"]
            if "rest" in result and per:
                rest = result["rest"]
                result["commands_per_message"] = (
                    (busy["commands_per_s"] - rest["commands_per_s"]) / per)
                result["redis_cpu_us_per_message"] = (
                    1e4 * (busy["cpu_pct"] - rest["cpu_pct"]) / per)
        return result
    finally:
        if node is not None:
            bench.stop_server(node)
        bench.stop_helper(redis)


def part_redis(args: argparse.Namespace, opts: argparse.Namespace, ns: list[int],
               workdir: Path) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    for rep in range(opts.reps):
        for n in ns:
            print(f"[redis] {n:,} subscribers, repetition {rep + 1}", flush=True)
            one = redis_once(args, opts, n, workdir, rep)
            rest = one.get("rest", {})
            print(f"    at rest {rest.get('commands_per_s', -1):,.1f} commands/s, Redis "
                  f"{rest.get('cpu_pct', -1):.2f}% CPU; per message "
                  f"{one.get('commands_per_message', -1):.2f} commands, "
                  f"{one.get('redis_cpu_us_per_message', -1):.1f} us Redis CPU; per connection "
                  f"{one.get('commands_per_connection', -1):.2f} commands, "
                  f"{one.get('redis_cpu_us_per_connection', -1):.1f} us", flush=True)
            found.append(one)
    pts = []
    for n in ns:
        mine = [r for r in found if r["n"] == n and r.get("rest")]
        pts.append({
            "n": n,
            "rest_commands_per_s": stats([r["rest"]["commands_per_s"] for r in mine]),
            "rest_cpu_pct": stats([r["rest"]["cpu_pct"] for r in mine]),
            "commands_per_message": stats([r["commands_per_message"] for r in mine
                                           if "commands_per_message" in r]),
            "commands_per_connection": stats([r["commands_per_connection"] for r in mine
                                              if "commands_per_connection" in r]),
            "redis_cpu_us_per_connection": stats([r["redis_cpu_us_per_connection"]
                                                  for r in mine
                                                  if "redis_cpu_us_per_connection" in r]),
            "redis_cpu_us_per_message": stats([r["redis_cpu_us_per_message"] for r in mine
                                               if "redis_cpu_us_per_message" in r]),
            "messages_per_s": stats([r["publishing"]["publishes_per_s"]
                                     + r["publishing"]["client_events_per_s"]
                                     for r in mine if "publishing" in r]),
        })
    return {"x": f"members of presence rooms of {args.mix_room}, one node",
            "publishes_per_s_asked": args.redis_publishes, "rest_seconds": args.redis_rest,
            "client_events_per_s_per_connection": args.redis_client_rate,
            "points": pts, "runs": found}


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------

COLOURS = {"clarion": "#1f6fb4", "reference": "#999999", "1-worker": "#1f6fb4",
           "2-workers": "#d2691e", "baseline": "#999999"}


def series(part: dict[str, Any], server: str, key: str,
           invert: float = 0.0) -> tuple[list[float], ...]:
    """x, median, and the distances to min and max; ``invert``: plot invert / value (the
    median of 1/x is 1/the median; min and max swap)."""
    xs, ys, lo, hi = [], [], [], []
    for p in part["points"]:
        if p["server"] == server and p.get(key):
            med, low, high = p[key]["median"], p[key]["min"], p[key]["max"]
            if invert:
                med, low, high = invert / med, invert / high, invert / low
            xs.append(p["n"])
            ys.append(med)
            lo.append(med - low)
            hi.append(high - med)
    return xs, ys, lo, hi


def src_commit(commit: str) -> str:
    """The last commit before ``commit`` that changed src/: the server that was measured
    (commits of bench/ or docs/ in between do not change it)."""
    base = commit.split("+")[0]
    try:
        found = subprocess.run(["git", "log", "-1", "--format=%h", base, "--", "src"],
                               cwd=bench.ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return commit
    return (found.stdout.strip() or base) + commit[len(base):]


def plot_all(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    commits = "+".join(dict.fromkeys(src_commit(c) for c in meta["commit"].split("+")))
    foot = (f"bench/curves.py, src/ of {commits}, {meta['date']}; {meta['cpus']} cores "
            f"shared with other work; medians of {result['options']['reps']}, bars min-max")
    thousands = FuncFormatter(lambda v, _: f"{v:,.0f}")
    written: list[Path] = []
    parts = result["parts"]

    def save(fig: Any, name: str) -> None:
        fig.text(0.01, 0.01, foot, fontsize=6, color="#666666")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out_dir / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    def finish(fig: Any, ax: Any, name: str, xlabel: str, ylabel: str, title: str) -> None:
        """Labels, thousands on the y axis from 0, legend and grid; save as ``name``."""
        ax.yaxis.set_major_formatter(thousands)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # room for the legend
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, ncol=2, loc="upper center")
        ax.grid(alpha=0.3)
        save(fig, name)

    def ticks(ax: Any, part: dict[str, Any]) -> None:
        xs = sorted({p["n"] for p in part["points"]})
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(thousands)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.tick_params(axis="x", labelsize=7)

    def lines(ax: Any, part: dict[str, Any], key: str, servers: list[str],
              style: str = "-", label: str = "{server}", invert: float = 0.0,
              alpha: float = 1.0) -> None:
        for server in servers:
            xs, ys, lo, hi = series(part, server, key, invert)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, ms=3, capsize=2,
                            color=COLOURS.get(server), label=label.format(server=server),
                            alpha=alpha)

    servers = [s for s in ("clarion", "reference") if s in result["options"]["servers"]]
    if "fanout" in parts:
        part = parts["fanout"]
        rs = sorted((int(n), r["median"]) for n, r in part.get("ratio_per_cpu", {}).items()
                    if r)
        if rs:
            fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 4.6), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
        else:
            fig, ax = plt.subplots(figsize=(6, 3.6))
            ax2 = ax
        # per server CPU-second: what a whole core does, whatever share others took
        lines(ax, part, "deliveries_per_server_cpu_s", servers,
              label="{server}, per server CPU-second")
        lines(ax, part, "deliveries_per_s", servers, ":", "{server}, per second (shared core)",
              alpha=0.5)
        ax.set_xscale("log")
        ax.yaxis.set_major_formatter(thousands)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # room for the legend
        ax.set_ylabel("deliveries")
        ax.set_title("Fan-out: deliveries against subscribers of one channel", fontsize=10)
        ax.legend(fontsize=7, ncol=2, loc="upper center")
        ax.grid(alpha=0.3)
        if rs:
            ax2.plot([n for n, _ in rs], [r for _, r in rs], "o-", ms=3, color="#1f6fb4")
            ax2.axhline(1.0, color="#999999", lw=0.8)
            ax2.set_ylabel("Clarion / ref.\nper CPU-s", fontsize=8)
            ax2.grid(alpha=0.3)
        ax2.set_xlabel("subscribers")
        ticks(ax2, part)
        save(fig, "fanout.png")
    if "latency" in parts:
        part = parts["latency"]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for key, style, q in (("latency_p50_ms", "-", "p50"), ("latency_p99_ms", "--", "p99"),
                              ("latency_p999_ms", ":", "p99.9")):
            lines(ax, part, key, servers, style, "{server} " + q)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks(ax, part)
        ax.set_xlabel(f"deliveries/s ({part['subs']:,} subscribers, open-loop publishes)")
        ax.set_ylabel("publish -> deliver (ms)")
        ax.set_title("Latency against delivery rate", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3, which="both")
        save(fig, "latency.png")
    if "memory" in parts:
        part = parts["memory"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        lines(ax, part, "rss_idle_mib", servers)
        for server in servers:
            xs, ys, _, _ = series(part, server, "rss_per_conn_kib")
            if xs:
                ax.annotate(f"{ys[-1]:.2f} KiB/conn", (xs[-1], series(
                    part, server, "rss_idle_mib")[1][-1]), fontsize=7,
                    textcoords="offset points", xytext=(-60, 8), color=COLOURS.get(server))
        ax.xaxis.set_major_formatter(thousands)
        finish(fig, ax, "memory.png", "idle subscribed connections", "server RSS (MiB)",
               "Memory against connections held")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        lines(ax, part, "server_us_per_connect", servers, invert=1e6,
              label="{server}, per server CPU-second")
        lines(ax, part, "connect_per_s", servers, ":", "{server}, per second (shared core)",
              alpha=0.5)
        ax.xaxis.set_major_formatter(thousands)
        finish(fig, ax, "connect.png", "connections opened and held (256 handshakes in flight)",
               "connect+subscribe", "Connect rate against concurrent connections")
    if "workers" in parts:
        part = parts["workers"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        lines(ax, part, "deliveries_per_s", ["1-worker", "2-workers"],
              label="{server}, per second")
        lines(ax, part, "deliveries_per_server_cpu_s", ["1-worker", "2-workers"], "--",
              label="{server}, per server CPU-second", alpha=0.6)
        top = dict(zip(*series(part, "2-workers", "deliveries_per_s")[:2], strict=True))
        for n, r in part.get("ratio", {}).items():
            if r and int(n) in top:
                y = top[int(n)]
                ax.annotate(f"{r['median']:.2f}x", (int(n), y), fontsize=7,
                            textcoords="offset points", xytext=(-8, 6))
        ax.set_xscale("log")
        ticks(ax, part)
        finish(fig, ax, "workers.png",
               "subscribers (Redis adapter; server, Redis, generator share 2 cores)",
               "deliveries", "--workers 1 against --workers 2")
    if "mix" in parts:
        part = parts["mix"]
        rows = [p for p in part["points"] if p.get("server_us_per_delivery")]
        if rows:
            fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6, 3.2))
            names = [f"{p['server']}\nsrc/ of {src_commit(part['ab'].get(p['server'], ''))}"
                     for p in rows]
            colours = [COLOURS.get(p["server"], "#1f6fb4") for p in rows]
            for axis, key, title in ((ax, "server_us_per_delivery", "server CPU µs / delivery"),
                                     (ax2, "all_p99_ms", "p99 publish/client event -> "
                                      "deliver (ms)")):
                vals = [p[key]["median"] if p.get(key) else 0 for p in rows]
                err = [[p[key]["median"] - p[key]["min"] if p.get(key) else 0 for p in rows],
                       [p[key]["max"] - p[key]["median"] if p.get(key) else 0 for p in rows]]
                axis.bar(names, vals, yerr=err, color=colours, capsize=3)
                axis.set_ylim(0, 1.25 * max([*vals, 1e-9]))
                axis.set_title(title, fontsize=8)
                axis.tick_params(labelsize=7)
                for i, v in enumerate(vals):
                    axis.annotate(f"{v:.2f}", (i, v), fontsize=7, ha="center",
                                  textcoords="offset points", xytext=(0, 3))
            fig.suptitle("Mixed workload: " + part["label"].split(": ", 1)[1], fontsize=8)
            save(fig, "mix.png")
    return written


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several invocations' results as one (a later file's part replaces an earlier's)."""
    out = dict(results[0])
    out["parts"] = {}
    commits = []
    for result in results:
        out["parts"].update(result["parts"])
        commits.append(result["meta"]["commit"])
    if len(set(commits)) > 1:
        out["meta"] = {**out["meta"], "commit": "+".join(dict.fromkeys(commits))}
    return out


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    p.add_argument("--quick", action="store_true",
                   help="seconds: a few hundred connections, 1 repetition, Clarion only")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--settle", type=float, default=1.0,
                   help="idle seconds before the RSS of the memory part is read")
    p.add_argument("--servers", default="clarion,reference",
                   help="fanout, latency, memory: clarion and/or reference")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="longest wait for quiet cores before a run (run.py's, shorter)")
    p.add_argument("--redo-noisy", type=int, default=1)
    for part in ("fanout", "latency", "memory", "workers", "redis"):
        p.add_argument(f"--{part}-points", type=int_list,
                       help=f"the x values of {part} (default {FULL[part]})")
    p.add_argument("--latency-subs", type=int, default=1000)
    p.add_argument("--mix-conns", type=int, default=10000)
    p.add_argument("--mix-room", type=int, default=10, help="members per presence room")
    p.add_argument("--mix-client-rate", type=float, default=1.0,
                   help="client events/s per connection")
    p.add_argument("--mix-publishes", type=int, default=2000, help="signed publishes/s")
    p.add_argument("--redis-rest", type=float, default=10.0,
                   help="redis part: seconds of idle connections measured")
    p.add_argument("--redis-publishes", type=int, default=1000,
                   help="redis part: publishes/s (one room each)")
    p.add_argument("--redis-client-rate", type=float, default=0.1,
                   help="redis part: client events/s per connection")
    p.add_argument("--ref", help="benchmark src/ of this commit instead of the working tree")
    p.add_argument("--ab", help="mix part: also run src/ of this commit, alternately (A/B)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/curves-*.json)")
    p.add_argument("--plot", type=Path, nargs="+",
                   help="only draw the plots of these JSON files (their parts merged)")
    p.add_argument("--plot-dir", type=Path,
                   help="where the PNGs go (default: beside the JSON file)")
    args = p.parse_args(argv)
    table = QUICK if args.quick else FULL
    if args.quick:
        args.reps, args.warmup, args.duration, args.settle = 1, 0.3, 0.7, 0.3
        args.servers, args.mix_conns, args.mix_publishes = "clarion", 200, 100
        args.redis_rest, args.quiet_wait, args.redo_noisy = 1.0, 0.0, 0
    for part in ("fanout", "latency", "memory", "workers", "redis"):
        if getattr(args, f"{part}_points") is None:
            setattr(args, f"{part}_points", table[part])
    if args.quick:
        args.latency_subs = 100
    args.parts = [x for x in args.parts.split(",") if x]
    for part in args.parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}")
    for name in ("ref", "ab"):
        value = getattr(args, name)
        if value:
            try:
                setattr(args, name, subprocess.run(
                    ["git", "rev-parse", "--verify", value + "^{commit}"], cwd=bench.ROOT,
                    capture_output=True, text=True, check=True).stdout.strip())
            except subprocess.CalledProcessError:
                p.error(f"--{name} {value} is not a commit")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.plot:
        result = merge([json.loads(path.read_text()) for path in args.plot])
        for path in plot_all(result, args.plot_dir or args.plot[0].parent):
            print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
        return 0
    opts = base_opts(args)
    bench.build_loadgen()
    bench.selftest()
    need = max([*args.fanout_points, *args.memory_points, *args.workers_points,
                *args.redis_points, args.mix_conns, args.latency_subs]) + 512
    bench.raise_nofile(need)
    if opts.gen_cpu is not None:
        os.sched_setaffinity(0, {opts.gen_cpu})
    started = time.time()
    parts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="clarion-curves-") as tmp:
        workdir = Path(tmp)
        trees = Trees(workdir, args.ref, args.ab)
        ctx = (workdir, trees, [0])
        for part in args.parts:
            print(f"== {part}", flush=True)
            trees.use("clarion")
            if part == "fanout":
                parts[part] = part_fanout(opts, args.fanout_points, ctx)
            elif part == "latency":
                parts[part] = part_latency(opts, args.latency_points, ctx, args.latency_subs)
            elif part == "memory":
                parts[part] = part_memory(opts, args.memory_points, ctx)
            elif part == "workers":
                parts[part] = part_workers(opts, args.workers_points, ctx)
            elif part == "mix":
                parts[part] = part_mix(args, opts, ctx)
            elif part == "redis":
                parts[part] = part_redis(args, opts, args.redis_points, workdir)
    result = {
        "meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                 "date": time.strftime("%Y-%m-%d", time.localtime(started)),
                 "seconds": round(time.time() - started, 1),
                 "commit": bench.git_describe(args.ref), "python": sys.version.split()[0],
                 "cpu": bench.cpu_model(), "cpus": os.cpu_count(),
                 "kernel": platform.release(),
                 "command": " ".join(["bench/curves.py", *(argv if argv is not None
                                                            else sys.argv[1:])])},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "parts": parts,
    }
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or bench.RESULTS / time.strftime("curves-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    for path in plot_all(result, args.plot_dir or out.parent):
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
