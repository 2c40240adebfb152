"""A frozen Redis (SIGSTOP, then SIGCONT) while publishes flow through one node.

A frozen Redis keeps its connections open and never answers, so nothing fails: only an
absolute timeout tells. Every publish must be either answered 200 and delivered on the
other node, or answered 503 within ``[cluster] publish_timeout`` (1 s by default) plus a
margin; never a 200 for a frame the other node never got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pusher

from tests.support.cluster import RedisServer, cluster_config, connect
from tests.support.polling import eventually
from tests.support.raw import subscribe
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

PUBLISH_TIMEOUT = 1.0  # the default of [cluster] publish_timeout
MARGIN = 1.5  # a loaded test machine: the figure that matters is "about a second, not 5"
STALL = 7.0  # longer than redis-py's 5 s socket timeout


@dataclass
class Outcome:
    n: int
    started: float
    seconds: float
    status: int


@dataclass
class Publisher:
    """Publishes numbered events through the Python SDK, one after the other."""

    client: pusher.Pusher
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                self.client.trigger("stall", "numbered", {"n": n})
                status = 200
            except pusher.errors.PusherBadStatus as exc:
                status = int(str(exc).split(":", 1)[0])
            except Exception:  # a timeout or a reset: neither 200 nor 503
                status = 0
            self.outcomes.append(Outcome(n, started, time.monotonic() - started, status))
            time.sleep(0.01)


def test_a_publish_is_answered_200_only_if_the_other_node_got_it(
    redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    # A lease longer than the stall: this test is about publishes, not about reaping.
    config = cluster_config(redis_server, lease=15.0)
    a, b = make_server(config), make_server(config)
    assert redis_server.process is not None
    received: list[int] = []

    async def main() -> tuple[Publisher, float, float]:
        ws, _ = await connect(b)
        await subscribe(ws, "stall")

        async def record() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("event") == "numbered":
                    received.append(json.loads(message["data"])["n"])

        recorder = asyncio.create_task(record())
        publisher = Publisher(python_sdk(a, timeout=20))
        thread = threading.Thread(target=publisher.run, daemon=True)
        thread.start()
        try:
            await eventually(lambda: len(received) >= 20, 10)  # flowing through B
            redis_server.process.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await asyncio.sleep(STALL)  # the fault lasts this long: not a synchronisation
            redis_server.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            # Publishes answer 200 again once the link is back...
            await eventually(
                lambda: any(o.status == 200 and o.started > resumed for o in publisher.outcomes),
                20,
            )
            # ... and keep flowing for a while after.
            count = len(publisher.outcomes)
            await eventually(lambda: len(publisher.outcomes) >= count + 20, 10)
        finally:
            publisher.stop.set()
            await asyncio.to_thread(thread.join, 30)
        ok = [o.n for o in publisher.outcomes if o.status == 200]
        with contextlib.suppress(AssertionError):  # reported below, with the numbers
            await eventually(lambda: set(ok) <= set(received), 10)
        recorder.cancel()
        await ws.close()
        return publisher, stopped, resumed

    publisher, stopped, resumed = asyncio.run(main())
    outcomes = publisher.outcomes
    ok = [o.n for o in outcomes if o.status == 200]
    lost = sorted(set(ok) - set(received))
    assert not lost, f"{len(lost)} answered 200 but never reached node B: {lost[:10]}..."
    assert received == sorted(received), "node B got the frames out of order"
    assert {o.status for o in outcomes} <= {200, 503}, [o for o in outcomes if o.status != 200]
    during = [o for o in outcomes if stopped <= o.started < resumed - PUBLISH_TIMEOUT - MARGIN]
    assert during, "no publish started while Redis was frozen"
    refused = [o for o in during if o.status == 503]
    assert refused, "no publish was refused while Redis was frozen"
    slow = [o for o in outcomes if o.status == 503 and o.seconds > PUBLISH_TIMEOUT + MARGIN]
    assert not slow, f"503s slower than {PUBLISH_TIMEOUT} s + {MARGIN} s: {slow}"
    for node in (a, b):
        assert not [line for line in node.output if "Traceback" in line], "".join(node.output)
