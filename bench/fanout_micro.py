"""Fan-out CPU per delivery, in-process: main's one write per subscriber per frame against
the outbox (one write per connection per loop turn), pure Python and native.

N subscribers are real socket pairs; a child process drains the far ends, so this
process's CPU time (``time.process_time``) is the fan-out's own: queueing, joining, the
``send`` system calls. Each turn publishes K frames to every subscriber, then yields to
the loop (uvloop). The variants are interleaved, round after round, and the median of
the rounds is reported, with the ratio to main's loop measured in the same run. CPU
time, not wall time, so that other load on a shared machine moves it less; it is not
``bench/run.py``'s end-to-end figure (no HTTP, no WebSocket parsing, no load generator).

    .venv/bin/python bench/fanout_micro.py --subs 1000 --per-turn 1,4,8 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from clarion.hub.fanout import Outbox  # noqa: E402
from clarion.protocol import messages  # noqa: E402


def main_write_to_all() -> Any:
    """write_to_all as it is on main (git show main:src/clarion/hub/fanout.py)."""
    source = subprocess.run(
        ["git", "show", "main:src/clarion/hub/fanout.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    module = types.ModuleType("main_fanout")
    exec(compile(source, "main_fanout", "exec"), module.__dict__)
    return module.write_to_all


class Sub(asyncio.Protocol):
    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def disconnect(self, code: int, message: str) -> None:
        self.transport.abort()


def drain(fds: list[int]) -> None:
    poll = select.epoll()
    for fd in fds:
        os.set_blocking(fd, False)
        poll.register(fd, select.EPOLLIN)
    while True:
        for fd, _ in poll.poll():
            try:
                if not os.read(fd, 1 << 20):
                    poll.unregister(fd)
            except BlockingIOError:
                pass


async def run(opts: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(opts.subs)]
    child = os.fork()
    if child == 0:
        for ours, _ in pairs:
            ours.close()
        drain([theirs.fileno() for _, theirs in pairs])
        os._exit(0)
    subs: dict[Any, Any] = {}
    for n, (ours, theirs) in enumerate(pairs):
        theirs.close()
        _, sub = await loop.connect_accepted_socket(lambda n=n: Sub(f"1.{n}"), ours)
        subs[sub] = sub.transport.write
    frame = messages.event("bench", "c", '"' + "x" * opts.size + '"')
    old = main_write_to_all()
    outboxes = {"python": Outbox(native=False)}
    try:
        outboxes["native"] = Outbox(native=True)
    except ImportError:
        print("clarion._speedups is not built: native left out")

    async def measure(name: str, per_turn: int) -> float:
        turns = opts.turns
        start = time.process_time()
        for _ in range(turns):
            if name == "main":
                for _ in range(per_turn):
                    old(subs, frame, None)
            else:
                box = outboxes[name]
                for _ in range(per_turn):
                    box.write_to_all(subs, frame, None)
            await asyncio.sleep(0)
            # Let the child catch up now and then: what is measured is a writable socket.
            while sum(sub.transport.get_write_buffer_size() for sub in subs) > 0:
                await asyncio.sleep(0.001)
        return (time.process_time() - start) / (turns * per_turn * len(subs))

    for per_turn in opts.per_turn:
        results: dict[str, list[float]] = {name: [] for name in ("main", *outboxes)}
        names = list(results)
        for round_ in range(opts.rounds):
            # The order rotates from round to round: the first of a round measured faster.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(await measure(name, per_turn))
        base = statistics.median(results["main"])
        row = ", ".join(
            f"{name} {statistics.median(v) * 1e9:,.0f} ns ({base / statistics.median(v):.2f}x)"
            for name, v in results.items()
        )
        print(f"{opts.subs:,} subscribers, {per_turn} frame(s) per turn: CPU per delivery: {row}")
    os.kill(child, 9)
    os.waitpid(child, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--per-turn", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=100, help="event data bytes")
    opts = parser.parse_args()
    uvloop.run(run(opts))


if __name__ == "__main__":
    main()
