"""The capacity plan of docs/performance.md, computed from bench/curves.py's JSON output.

Every row is a figure measured by curves.py (the part and the point it comes from are
named) or computed from measured figures (the formula is given), so the plan can be made
again after any change:

    .venv/bin/python bench/curves.py --out a.json ...        # the measurements
    .venv/bin/python bench/capacity.py a.json [b.json ...]   # the plan, as Markdown

Options set the assumptions that are not measurements: the CPU share a process should run
at (--target-util), the machine (--machine-cores, --machine-gib), the process's open-file
limit (--fd-limit) and the app's shape for the million (--conns, --client-rate,
--publish-rate, --room).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curves import merge  # bench/curves.py: several invocations' results as one

# Kernel slab objects behind one idle server-side TCP socket (no data queued): the socket,
# its inode, the open file, its dentry and the epoll entry. Sizes from /proc/slabinfo when
# it can be read, else these (kernel 6.18, x86-64, read on the benchmark machine).
SLABS = {"TCP": 2368, "sock_inode_cache": 832, "filp": 192, "dentry": 192,
         "eventpoll_epi": 128}


def slab_sizes() -> tuple[dict[str, int], str]:
    try:
        found = {}
        for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
            fields = line.split()
            if fields[0] in SLABS:
                found[fields[0]] = int(fields[3])
        if set(found) == set(SLABS):
            return found, "/proc/slabinfo object sizes on this machine"
    except (OSError, ValueError, IndexError):
        pass
    return SLABS, "slab object sizes read on the benchmark machine (kernel 6.18)"


def median(point: dict[str, Any] | None, key: str) -> float | None:
    if not point or not point.get(key):
        return None
    return float(point[key]["median"])


def point(part: dict[str, Any] | None, server: str, n: int | None = None) -> dict[str, Any] | None:
    """The point of ``server`` at x = n (default: the largest x measured)."""
    if not part:
        return None
    mine = [p for p in part["points"] if p.get("server", server) == server]
    if n is not None:
        mine = [p for p in mine if p["n"] == n]
    return max(mine, key=lambda p: p["n"]) if mine else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def plan(result: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    parts = result["parts"]
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: str, source: str) -> None:
        rows.append((what, value, source))

    util = args.target_util
    # --- memory ------------------------------------------------------------------------
    mem = point(parts.get("memory"), "clarion")
    rss = median(mem, "rss_per_conn_kib")
    base = median(mem, "rss_before_mib")
    slabs, slab_source = slab_sizes()
    kernel = sum(slabs.values()) / 1024
    if mem:
        row("Clarion RSS per idle subscribed connection", f"{fmt(rss, 2)} KiB",
            f"measured: `memory`, {mem['n']:,} connections ((idle RSS - RSS before) / N)")
        row("Clarion RSS of a process with no connection", f"{fmt(base, 0)} MiB",
            "measured: `memory` (RSS before connecting)")
    row("kernel memory per idle server-side socket", f"{kernel:.1f} KiB",
        "computed: " + " + ".join(f"{k} {v} B" for k, v in slabs.items()) + f" ({slab_source})")
    per_gib = per_gib_all = None
    if rss:
        per_gib = 1024 * 1024 / rss
        per_gib_all = 1024 * 1024 / (rss + kernel)
        row("connections per GiB (process RSS only)", fmt(per_gib),
            "computed: 1 GiB / RSS per connection")
        row("connections per GiB (RSS + kernel sockets)", fmt(per_gib_all, 0),
            "computed: 1 GiB / (RSS + kernel) per connection")
    # --- CPU ---------------------------------------------------------------------------
    connect_us = median(mem, "server_us_per_connect")
    connect_rate = 1e6 / connect_us if connect_us else None
    if connect_rate:
        row("connect+subscribe per core-second (a reconnect storm)", fmt(connect_rate),
            f"computed: 1 s / {fmt(connect_us)} µs server CPU per connection (`memory`, "
            f"{mem['n']:,} connections)")  # type: ignore[index]
    fan = parts.get("fanout")
    if fan:
        for p in fan["points"]:
            if p["server"] == "clarion" and p["n"] in (1000, 10000) and p.get(
                    "deliveries_per_server_cpu_s"):
                ratio = (fan.get("ratio_per_cpu") or {}).get(str(p["n"])) or (
                    fan.get("ratio_per_cpu") or {}).get(p["n"])
                extra = f"; {ratio['median']:.2f}x the reference" if ratio else ""
                row(f"fan-out deliveries per core-second, one channel of {p['n']:,}",
                    fmt(median(p, "deliveries_per_server_cpu_s")),
                    f"measured: `fanout` (deliveries/s / server CPU share{extra})")
    mix = parts.get("mix")
    mixp = point(mix, "clarion")
    us = median(mixp, "server_us_per_delivery")
    per_conn = None
    conns_core = None
    if mixp and us:
        # what the workload asks (the generator's options), not what an overloaded server
        # managed: client events to the other room-mates, publishes to the whole room
        a = mix["args"]  # type: ignore[index]

        def opt(name: str) -> float:
            return float(a[a.index(name) + 1])

        per_conn = (opt("--client-rate") * (opt("--group") - 1)
                    + opt("--rate") / opt("--subs"))
        conns_core = 1e6 / (us * per_conn)
        done = median(mixp, "deliveries_per_s") or 0.0
        row("mixed workload: server CPU per delivered message", f"{us:.2f} µs",
            f"measured: `mix`, {mixp['n']:,} connections ({done:,.0f} of "
            f"{per_conn * mixp['n']:,.0f} deliveries/s asked were made; "
            f"p99 {fmt(median(mixp, 'all_p99_ms'), 1)} ms)")
        row("mixed workload: deliveries per connection per second", f"{per_conn:.1f}",
            "the workload: client-rate x (room - 1) + publish deliveries / connections")
        row(f"connections per core, mixed workload, at {util:.0%} CPU", fmt(conns_core * util),
            f"computed: {util:.0%} x 1 s / ({us:.2f} µs x {per_conn:.1f} deliveries/s)")
    work = parts.get("workers")
    eff = None
    if work:
        ratios = work.get("ratio_per_cpu") or {}
        big = max((int(k) for k, v in ratios.items() if v), default=None)
        if big:
            eff = ratios[str(big)]["median"] if str(big) in ratios else ratios[big]["median"]
            raw = (work.get("ratio") or {}).get(str(big)) or {}
            row("`--workers 2` per CPU-second against 1 worker", f"{eff:.2f}x",
                f"measured: `workers`, {big:,} subscribers (deliveries/s: "
                f"{raw.get('median', float('nan')):.2f}x on this 2-core machine)")
    # --- a node of N cores -------------------------------------------------------------
    if conns_core:
        factor = min(1.0, eff) if eff else 1.0
        for cores in (1, 2, 4, 8, 16):
            conns = cores * conns_core * util * (factor if cores > 1 else 1.0)
            limit = "" if per_gib_all is None else f", {conns / per_gib_all:,.1f} GiB"
            row(f"node of {cores} core(s), `--workers {cores}`, mixed workload",
                f"{fmt(conns, 0)} connections{limit}",
                f"computed: {cores} x connections per core at {util:.0%}"
                + (f" x {factor:.2f} (workers efficiency, capped at 1)" if cores > 1 else ""))
    # --- Redis -------------------------------------------------------------------------
    red = parts.get("redis")
    redp = point(red, "clarion")
    rest_cmd = median(redp, "rest_commands_per_s")
    rest_cpu = median(redp, "rest_cpu_pct")
    msg_cmd = median(redp, "commands_per_message")
    msg_us = median(redp, "redis_cpu_us_per_message")
    join_cmd = median(redp, "commands_per_connection")
    join_us = median(redp, "redis_cpu_us_per_connection")
    if redp:
        n = redp["n"]
        row("Redis traffic of one idle node", f"{fmt(rest_cmd, 1)} commands/s, "
            f"{fmt(rest_cpu, 2)} % of a Redis core",
            f"measured: `redis`, {n:,} idle connections (INFO commandstats / INFO cpu)")
        row("Redis per message (publish or client event)",
            f"{fmt(msg_cmd, 2)} commands, {fmt(msg_us, 1)} µs Redis CPU",
            f"measured: `redis`, {n:,} connections (busy - rest) / messages")
        row("Redis per connection joining a presence room",
            f"{fmt(join_cmd, 1)} commands, {fmt(join_us, 1)} µs Redis CPU",
            f"measured: `redis`, the connect phase of {n:,} connections")
        if msg_us:
            row(f"messages/s one Redis core carries at {util:.0%}", fmt(util * 1e6 / msg_us),
                f"computed: {util:.0%} x 1 s / {msg_us:.1f} µs")
    # --- one million ------------------------------------------------------------------
    total = args.conns
    if conns_core:
        per_process = min(conns_core * util, args.fd_limit - 1000)
        processes = math.ceil(total / per_process)
        machines = math.ceil(processes / args.machine_cores)
        row(f"{total:,} connections (mixed workload): connections per process",
            fmt(per_process), f"computed: min(connections per core at {util:.0%}, "
            f"open-file limit {args.fd_limit:,} - 1,000)")
        row(f"{total:,} connections: processes / machines of {args.machine_cores} cores",
            f"{processes:,} / {machines:,}",
            f"computed: ceil({total:,} / per process), ceil(processes / {args.machine_cores})")
        if per_gib_all:
            gib = total / machines / per_gib_all + (base or 0) * args.machine_cores / 1024
            row(f"{total:,} connections: memory per machine", f"{gib:,.1f} GiB "
                f"(of {args.machine_gib})", "computed: connections per machine x "
                "(RSS + kernel) + base RSS per process")
    messages = total * (args.client_rate + args.publish_rate)
    row(f"{total:,} connections: messages/s into Redis", fmt(messages),
        f"computed: {total:,} x ({args.client_rate:g} client event + {args.publish_rate:g} "
        "publish) per connection per second")
    if msg_us:
        cores = messages * msg_us / 1e6 / util
        row(f"{total:,} connections: Redis cores needed at {util:.0%}", f"{cores:,.1f}",
            "computed: messages/s x µs per message / target; Redis runs commands on one "
            "core, so more than 1 means several Redis (sharded by channel)")
    if join_us:
        storm = total * join_us / 1e6
        row(f"{total:,} connections reconnecting: Redis CPU-seconds", fmt(storm, 0),
            "computed: connections x µs per join (the storm lasts at least this long "
            "on one Redis)")
    if connect_rate:
        row(f"{total:,} connections reconnecting: Clarion core-seconds", fmt(total / connect_rate),
            "computed: connections / connect+subscribe per core-second")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="+", help="bench/curves.py JSON files")
    p.add_argument("--target-util", type=float, default=0.6,
                   help="CPU share a process or Redis should run at (headroom for bursts)")
    p.add_argument("--machine-cores", type=int, default=8)
    p.add_argument("--machine-gib", type=int, default=16)
    p.add_argument("--fd-limit", type=int, default=1_048_576,
                   help="open-file limit of a production process (20,000 on the "
                   "benchmark machine)")
    p.add_argument("--conns", type=int, default=1_000_000)
    p.add_argument("--client-rate", type=float, default=1.0,
                   help="client events/s per connection (the mixed workload's)")
    p.add_argument("--publish-rate", type=float, default=0.2,
                   help="publishes/s per connection (2,000/s for 10,000 in the mix)")
    args = p.parse_args(argv)
    result = merge([json.loads(path.read_text()) for path in args.results])
    meta = result["meta"]
    print(f"Capacity plan from {', '.join(str(x) for x in args.results)} "
          f"(commit {meta['commit']}, {meta['date']}, {meta['cpu']}, {meta['cpus']} CPUs)\n")
    print("| figure | value | source |\n|---|---|---|")
    for what, value, source in plan(result, args):
        print(f"| {what} | {value} | {source} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
