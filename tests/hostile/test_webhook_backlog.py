"""A hung webhook receiver under client-event load: the backlog is bounded by bytes.

Clients fill a webhook target's queue (every client event is a ``client_event``
webhook) as fast as their rate limit lets them; with the receiver hanging nothing
leaves it. The server's memory must stay within ``max_queue_bytes`` (plus a margin for
what is in flight and the allocator), the oldest events are dropped and counted, and
once the receiver answers again and the backlog drained, the RSS comes back near where
it was before the load.

The server runs as a real process: its RSS is read from ``/proc/<pid>/status``. The
figures of a run are printed (``-s`` shows them); a longer run with other numbers:
``CLARION_BACKLOG_SECONDS=40 CLARION_BACKLOG_SOCKETS=200 pytest -s -k backlog``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.support.config import app, build_config
from tests.support.polling import until
from tests.support.raw import established, signed, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

MiB = 1024 * 1024
MAX_QUEUE_BYTES = 2 * MiB
SOCKETS = int(os.environ.get("CLARION_BACKLOG_SOCKETS", "100"))
SECONDS = float(os.environ.get("CLARION_BACKLOG_SECONDS", "10"))
RATE = 5  # client events per second per socket (the app's limit is 10)
DATA = "x" * 9000  # a client event near the 10 KB limit
# Beyond max_queue_bytes: the requests in flight (4, up to 100 events each, with their
# bodies), the sockets' buffers and the allocator's slack. Measured: +10 MB at the peak
# with a 2 MiB bound (before the bound: +45 MB and more, growing with the load).
MARGIN = 16 * MiB
# After the drain: what a first load leaves for good is taken before the baseline (a
# warm-up round), so this is slack only. Measured: +2 to +6 MB.
AFTER_DRAIN = 10 * MiB


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _status(server: RunningServer) -> dict[str, Any]:
    status, body, _ = signed(server.host, server.port, "GET", "/apps/1/webhooks/status")
    assert status == 200
    result: dict[str, Any] = body
    return result


async def _sockets(server: RunningServer, count: int) -> list[tuple[ClientConnection, str]]:
    sdk = python_sdk(server)
    sockets = []
    for index in range(count):
        ws = await ws_connect(server.ws())
        socket_id = await established(ws)
        channel = f"private-backlog-{index}"  # one each: no fan-out, only webhooks
        reply = await subscribe(ws, channel, **sdk.authenticate(channel, socket_id))
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        sockets.append((ws, channel))
    return sockets


async def _send(ws: ClientConnection, channel: str, count: int, every: float) -> None:
    frame = json.dumps({"event": "client-big", "channel": channel, "data": DATA})
    start = time.monotonic()
    for index in range(count):
        # Paced from the start (no drift into the next rate-limit window).
        await asyncio.sleep(max(0.0, start + index * every - time.monotonic()))
        await ws.send(frame)


async def _read(ws: ClientConnection, errors: list[str], pongs: asyncio.Queue[None]) -> None:
    async for message in ws:
        event = json.loads(message).get("event")
        if event == "pusher:error":
            errors.append(str(message))
        elif event == "pusher:pong":
            pongs.put_nowait(None)


async def _all_read(
    sockets: list[tuple[ClientConnection, str]], pongs: asyncio.Queue[None]
) -> None:
    """A ping on each socket, and its pong: the server has read every frame sent before
    (frames of one socket are handled in order), so each client event is a webhook."""
    for ws, _ in sockets:
        await ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
    for _ in sockets:
        await asyncio.wait_for(pongs.get(), 30)


def test_a_hung_receiver_under_client_event_load_keeps_memory_bounded(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    config = build_config(
        app(
            client_events=True,
            webhooks=[{"url": f"{receiver.url}/hook", "event_types": ["client_event"]}],
        ),
        # Attempts outlast the load: the requests in flight hang until released.
        webhooks={"max_queue_bytes": MAX_QUEUE_BYTES, "timeout": 60.0, "retry_for": 600.0},
    )
    server = make_server(config)
    pid = server.process.pid
    per_socket = int(SECONDS * RATE)
    total = SOCKETS * per_socket

    async def main() -> dict[str, int]:
        sockets = await _sockets(server, SOCKETS)
        errors: list[str] = []
        pongs: asyncio.Queue[None] = asyncio.Queue()
        readers = [asyncio.create_task(_read(ws, errors, pongs)) for ws, _ in sockets]
        # A warm-up round, delivered: what a first delivery allocates for good (the HTTP
        # client, its pool) is in the baseline.
        await asyncio.gather(*(_send(ws, ch, 1, 0) for ws, ch in sockets))
        await asyncio.to_thread(
            receiver.wait_for, lambda _: len(receiver.events("/hook")) == SOCKETS, 20
        )
        receiver.scripts["/hook"] = ["hang"]
        until(lambda: _status(server)["targets"][0]["queued"] == 0, what="warm-up delivered")
        baseline = _rss(pid)

        peak = baseline
        load = asyncio.gather(*(_send(ws, ch, per_socket, 1 / RATE) for ws, ch in sockets))
        while not load.done():
            peak = max(peak, _rss(pid))
            await asyncio.sleep(0.1)  # sampling, not synchronisation
        await load
        await _all_read(sockets, pongs)
        peak = max(peak, _rss(pid))
        during = _status(server)

        receiver.scripts["/hook"] = [200]
        receiver.release.set()

        def drained() -> bool:
            # Every event the clients sent is accounted for: delivered or dropped.
            status = _status(server)
            done = status["sent"] + status["dropped"] == SOCKETS + total
            return done and status["targets"][0]["queued"] == 0

        await asyncio.to_thread(until, drained, 60, "the backlog drained, each event counted")
        after = _rss(pid)
        final = _status(server)
        for ws, _ in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
        assert errors == [], errors[:3]  # no client event was refused (rate limit)
        return {
            "baseline": baseline,
            "peak": peak,
            "after": after,
            "dropped_during": during["dropped"],
            "sent": final["sent"],
            "dropped": final["dropped"],
        }

    figures = asyncio.run(main())
    print(
        f"\nwebhook backlog: {SOCKETS} sockets x {RATE}/s x {len(DATA)} B for {SECONDS} s,"
        f" max_queue_bytes {MAX_QUEUE_BYTES // MiB} MiB: RSS baseline"
        f" {figures['baseline'] / MiB:.0f} MiB, peak {figures['peak'] / MiB:.0f} MiB,"
        f" after the drain {figures['after'] / MiB:.0f} MiB; sent {figures['sent']},"
        f" dropped {figures['dropped']}"
    )
    # Bounded: the queue's bytes and a margin, whatever the load.
    assert figures["peak"] - figures["baseline"] <= MAX_QUEUE_BYTES + MARGIN, figures
    # The oldest were dropped, and counted, while the receiver hung.
    assert figures["dropped_during"] > 0
    # Memory back near the baseline once the backlog drained.
    assert figures["after"] - figures["baseline"] <= AFTER_DRAIN, figures
