"""In-process microbenchmark of the I/O edge: Connection objects on fake transports.

Much less noisy than bench/run.py (no sockets, no load generator, one process), so it is
the guide for changes to server/ and protocol/; bench/run.py gives the figures to quote.
It drives the same objects the server does (a node's Context, one Connection per
socket) through the same entry points (connection_made, data_received), and measures:

Times are this thread's CPU time (``time.thread_time``), the fastest of ``--rounds``
rounds: on a shared machine the other processes make any round slower, never faster.

- ``http``: one keep-alive connection receiving signed ``POST /apps/1/events`` requests
  (no subscribers), one request per data_received: µs per request and Python calls per
  request;
- ``connect``: connection_made, the WebSocket upgrade (101 and connection_established)
  and a first ``pusher:subscribe`` of a public channel: µs and Python calls per
  connection;
- ``memory``: Python heap bytes (tracemalloc) per idle subscribed connection, the
  transport excluded (uvloop's is C-allocated).

Usage::

    .venv/bin/python bench/edge.py                      # this tree's src/
    .venv/bin/python bench/edge.py --src /tmp/main/src  # another tree (git archive of a ref)
    .venv/bin/python bench/edge.py --ab /tmp/main/src   # A/B: this tree and another, interleaved

``--ab`` runs each side in its own subprocess, alternating A B A B, and prints medians and
the ratio A/B of the per-operation times (and of memory). The trees must have either
``clarion.server.node.Node`` or (before the rebuild) ``clarion.server.listener.Server``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP_ID, APP_KEY, APP_SECRET = "1", "app-key", "app-secret"
UPGRADE = (
    b"GET /app/app-key?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: localhost\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Transport:
    """A transport that counts writes and keeps the last one (enough to check answers)."""

    __slots__ = ("last", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def client_frame(payload: bytes) -> bytes:
    """One masked text frame (a fixed mask: the bench needs no randomness)."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def signed_publish(body: bytes) -> bytes:
    """A signed POST /apps/1/events request, as the Pusher libraries send it."""
    path = f"/apps/{APP_ID}/events"
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    signature = hmac.new(
        APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def build_ctx() -> Any:
    """A node's Context for app 1, whichever shape the tree under test has."""
    from clarion.config import AppConfig, ServerSettings, Settings

    settings = Settings(
        server=ServerSettings(max_connections_per_ip=0),
        apps=[AppConfig(id=APP_ID, key=APP_KEY, secret=APP_SECRET)],
    )
    try:
        from clarion.server.node import Node
    except ImportError:  # before the rebuild (74a2ece)
        from clarion.server.listener import Server

        return Server(settings).ctx
    return Node(settings).ctx


def count_calls(fn: Any, n: int) -> float:
    """Python-level calls per iteration of ``fn(i)`` (C calls not counted)."""
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        for i in range(n):
            fn(i)
    finally:
        sys.setprofile(None)
    return (calls - n) / n  # less the call of fn itself


def bench_http(ctx: Any, n: int, rounds: int) -> dict[str, float]:
    from clarion.server.connection import Connection

    request = signed_publish(
        json.dumps({"name": "e", "channel": "bench", "data": "x" * 64}).encode()
    )
    conn = Connection(ctx)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    feed = conn.data_received

    def one(_: int) -> None:
        feed(request)

    one(0)
    assert transport.last.startswith(b"HTTP/1.1 200"), transport.last
    calls = count_calls(one, 100)
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(n):
            feed(request)
        times.append((time.thread_time() - started) / n * 1e6)
    assert transport.last.startswith(b"HTTP/1.1 200"), transport.last
    return {"http_us": min(times), "http_calls": calls}


def bench_connect(ctx: Any, n: int, rounds: int) -> dict[str, float]:
    from clarion.server.connection import Connection

    subscribe = client_frame(b'{"event":"pusher:subscribe","data":{"channel":"bench"}}')
    kept: list[Any] = []

    def one(_: int) -> None:
        conn = Connection(ctx)
        transport = Transport()
        conn.connection_made(transport)
        conn.data_received(UPGRADE)
        conn.data_received(subscribe)
        kept.append(conn)

    one(0)
    assert b"subscription_succeeded" in kept[0].transport.last, kept[0].transport.last
    calls = count_calls(one, 100)
    times = []
    for _ in range(rounds):
        # A fresh set of connections each round, the previous ones closed.
        for conn in kept:
            conn.connection_lost(None)
        kept.clear()
        gc.collect()
        started = time.thread_time()
        for i in range(n):
            one(i)
        times.append((time.thread_time() - started) / n * 1e6)
    for conn in kept:
        conn.connection_lost(None)
    kept.clear()
    return {"connect_us": min(times), "connect_calls": calls}


def bench_memory(ctx: Any, n: int) -> dict[str, float]:
    from clarion.server.connection import Connection

    subscribe = client_frame(b'{"event":"pusher:subscribe","data":{"channel":"bench"}}')
    transports = [Transport() for _ in range(n)]
    conns: list[Any] = []
    # A first connection warms every cache (joins, frames, parsers) before counting.
    warm = Connection(ctx)
    warm.connection_made(Transport())
    warm.data_received(UPGRADE)
    warm.data_received(subscribe)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for transport in transports:
        conn = Connection(ctx)
        conn.connection_made(transport)
        conn.data_received(UPGRADE)
        conn.data_received(subscribe)
        transport.last = b""  # the answers are not the connection's memory
        conns.append(conn)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The list holding them (8 bytes a connection) is the bench's, not the server's.
    return {"memory_bytes": (after - before) / n - 8}


def run_here(args: argparse.Namespace) -> dict[str, float]:
    src = Path(args.src).resolve() if args.src else ROOT / "src"
    if not (src / "clarion").is_dir():
        # Else the import would find the installed clarion (this tree's), and an A/B
        # would compare the tree with itself.
        sys.exit(f"{src} has no clarion package: give the src/ directory of a tree")
    sys.path.insert(0, str(src))
    import logging

    logging.disable(logging.CRITICAL)
    # As the server runs (clarion.server.serve): what is there at start is frozen, and
    # collections are rarer than Python's default.
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)
    ctx = build_ctx()
    figures: dict[str, float] = {}
    figures.update(bench_http(ctx, args.n, args.rounds))
    figures.update(bench_connect(ctx, args.n // 4, args.rounds))
    figures.update(bench_memory(ctx, args.memory_n))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="the src/ directory to import clarion from")
    parser.add_argument("--ab", metavar="SRC", help="compare this tree's src/ with SRC")
    parser.add_argument("--reps", type=int, default=3, help="A/B repetitions (--ab)")
    parser.add_argument("--n", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (median)")
    parser.add_argument("--memory-n", type=int, default=5_000, help="connections for memory")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if not args.ab:
        figures = run_here(args)
        if args.json:
            print(json.dumps(figures))
        else:
            for key, value in figures.items():
                print(f"{key:15} {value:10.2f}")
        return
    if not (Path(args.ab) / "clarion").is_dir():
        parser.error(f"--ab {args.ab}: no clarion package there (give a tree's src/ directory)")
    sides = {"A": str(ROOT / "src"), "B": args.ab}
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    base = [
        sys.executable,
        __file__,
        "--json",
        "--n",
        str(args.n),
        "--rounds",
        str(args.rounds),
        "--memory-n",
        str(args.memory_n),
    ]
    for rep in range(args.reps):
        for side in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            out = subprocess.run(
                [*base, "--src", sides[side]],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            ).stdout
            results[side].append(json.loads(out.strip().splitlines()[-1]))
    print(f"A = {sides['A']}\nB = {sides['B']}\n")
    print(f"{'figure':15} {'A':>10} {'B':>10} {'A/B':>7}")
    for key in results["A"][0]:
        a = statistics.median(r[key] for r in results["A"])
        b = statistics.median(r[key] for r in results["B"])
        print(f"{key:15} {a:10.2f} {b:10.2f} {a / b:7.3f}")


if __name__ == "__main__":
    main()
