"""What one admin console row costs the data plane, in process: ``Taps`` as the hub
calls it for an API message, CPU time per call, with nobody watching (the one dict
check), one console open (format once, queue), and one console on another node too
(the same bytes also handed to the broker). The variants are interleaved in every
repetition and the medians printed, with each one's ratio to "nobody watches" measured
in the same repetition.

    .venv/bin/python bench/admin_taps.py [--calls 200000] [--reps 7]

Compare the figures with the fan-out's "us server CPU/delivery" (bench/run.py): a row is
formatted once per event, not per delivered frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from clarion.admin import taps
from clarion.admin.taps import Taps

DATA = '{"id":1042,"total":"19.90","items":["' + "x" * 120 + '"]}'


def variant(kind: str) -> tuple[Taps, Callable[[], None]]:
    t = Taps(node="bench-host:1234")
    if kind in ("console", "console+cluster"):
        t.watch("1", limit=1 << 40)  # never full: every row is queued
    if kind == "console+cluster":
        relayed: list[bytes] = []
        t.relay = lambda app_id, row: relayed.append(row)
        t.watched_elsewhere("1", True)

    def call() -> None:  # the hub's call site for one channel of a publish
        if "1" in t.apps:
            t.emit("1", taps.API_MESSAGE, None, "orders", "order-created", DATA)

    return t, call


def measure(kind: str, calls: int) -> float:
    """CPU microseconds per call."""
    t, call = variant(kind)
    started = time.process_time()
    for _ in range(calls):
        call()
    spent = time.process_time() - started
    for watcher in t.apps.get("1", ()):
        watcher.take()
    return 1e6 * spent / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=7)
    opts = parser.parse_args()
    kinds = ("nobody", "console", "console+cluster")
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for rep in range(opts.reps):
        order = kinds if rep % 2 == 0 else tuple(reversed(kinds))
        for kind in order:
            results[kind].append(measure(kind, opts.calls))
    base = results["nobody"]
    print(f"CPU us per call, median of {opts.reps} interleaved repetitions of {opts.calls:,}")
    for kind in kinds:
        values = results[kind]
        extra = [v - b for v, b in zip(values, base, strict=True)]
        print(
            f"  {kind:16} {statistics.median(values):7.3f} us"
            f"  (min {min(values):.3f}, max {max(values):.3f});"
            f" a row costs {statistics.median(extra):.3f} us more than nobody watching"
        )


if __name__ == "__main__":
    main()
