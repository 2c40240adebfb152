"""One connection floods frames as fast as TCP allows; everyone else must not notice.

A flooder in a subprocess of its own (``tests.support.flooder``: its writing loop must
not take this process's interpreter lock) upgrades a raw socket and writes masked
frames at full speed, reconnecting as soon as it is closed, as an attacker would.
Meanwhile a normal client, measured: a WebSocket subscriber, a keep-alive HTTP
publisher (signed, about 20 publishes a second) timing each publish to its delivery,
and a prober opening a new connection for ``GET /up`` ten times a second.

Each flood connection must be closed with 4100 (docs/protocol.md §18: pusher-js waits,
then reconnects) within a bounded time, and counted in ``clarion_flood_disconnects``;
publish→deliver and ``/up`` stay under 50 ms at p99 all along.

The figures are printed (``pytest -s``)::

    .venv/bin/pytest -q -s -p no:cacheprovider tests/hostile/test_flood.py
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest

from tests.support.config import app, build_config
from tests.support.metrics import metrics_url, scrape, value
from tests.support.paths import ROOT
from tests.support.raw import established, sign_params, subscribe, ws_connect
from tests.support.server import RunningServer

# How long the measured client runs beside the flood.
MEASURE_SECONDS = 6.0
# The target, at p99, for publish→deliver and for GET /up.
LATENCY_LIMIT = 0.050
# A flood connection must be closed this soon after its first frame.
CLOSE_WITHIN = 1.0
PUBLISH_INTERVAL = 0.05
PROBE_INTERVAL = 0.1


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Flooder:
    """The flooder subprocess and the closes it reported."""

    def __init__(self, server: RunningServer, kind: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.flooder", server.host, str(server.port), kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.started.wait(15), "the flooder did not start: " + "".join(self.lines)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("flooding"):
                self.started.set()

    def closes(self) -> list[tuple[int, float, int]]:
        """(close code, seconds from the first flood byte, frames written) per connection."""
        found = []
        for line in list(self.lines):
            if line.startswith("closed "):
                code, seconds, frames = line.split()[1:]
                found.append((int(code), float(seconds), int(frames)))
        return found

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


async def _publisher(
    server: RunningServer, channel: str, sent: dict[int, float], until: float
) -> None:
    """Signed publishes on one keep-alive connection, each timed from its first byte."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    seq = 0
    try:
        while time.monotonic() < until:
            body = json.dumps({"name": "tick", "channels": [channel], "data": str(seq)}).encode()
            params = sign_params("POST", "/apps/1/events", body)
            head = (
                f"POST /apps/1/events?{urlencode(params)} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sent[seq] = time.monotonic()
            writer.write(head.encode() + body)
            status_and_headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert status_and_headers.startswith(b"HTTP/1.1 200"), status_and_headers
            length = next(
                int(line.split(b":")[1])
                for line in status_and_headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            seq += 1
            await asyncio.sleep(PUBLISH_INTERVAL)
    finally:
        writer.close()


async def _prober(server: RunningServer, timings: list[float], until: float) -> None:
    """GET /up on a new connection each time: the accept must keep up too."""
    while time.monotonic() < until:
        started = time.monotonic()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port), 30
        )
        writer.write(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 30)
        timings.append(time.monotonic() - started)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        writer.close()
        await asyncio.sleep(PROBE_INTERVAL)


async def measure(server: RunningServer, seconds: float) -> tuple[list[float], list[float]]:
    """Publish→deliver latencies and GET /up latencies for ``seconds``."""
    channel = f"flood-measure-{uuid.uuid4().hex[:8]}"
    sent: dict[int, float] = {}
    delivered: dict[int, float] = {}
    up: list[float] = []
    async with await ws_connect(server.ws()) as ws:
        await established(ws)
        reply = await subscribe(ws, channel)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply

        async def receive() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("event") == "tick":
                    delivered[int(message["data"])] = time.monotonic()

        receiver = asyncio.create_task(receive())
        until = time.monotonic() + seconds
        await asyncio.gather(_publisher(server, channel, sent, until), _prober(server, up, until))
        # Deliveries still on their way (none should be) get a few seconds.
        deadline = time.monotonic() + 10
        while len(delivered) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        receiver.cancel()
    latencies = [delivered.get(seq, math.inf) - started for seq, started in sent.items()]
    return latencies, up


@pytest.fixture
def flood_server(make_server: Callable[..., RunningServer]) -> Iterator[RunningServer]:
    yield make_server(build_config(app(client_events=True), server={"host": "127.0.0.1"}))


@pytest.mark.parametrize("kind", ["ping", "client", "garbage"])
def test_a_flooding_connection_neither_stalls_the_others_nor_stays(
    flood_server: RunningServer, kind: str
) -> None:
    server = flood_server
    url = metrics_url(server)
    _, before = scrape(url)
    flooder = Flooder(server, kind)
    try:
        latencies, up = asyncio.run(measure(server, MEASURE_SECONDS))
        closes = flooder.closes()
    finally:
        flooder.stop()
    _, after = scrape(url)
    counted = value(after, "clarion_flood_disconnects_total", app="1") - value(
        before, "clarion_flood_disconnects_total", app="1"
    )
    figures = (
        f"{kind} flood: publish→deliver p99 {p99(latencies) * 1000:.1f} ms "
        f"(max {max(latencies) * 1000:.1f} ms, {len(latencies)} publishes); GET /up p99 "
        f"{p99(up) * 1000:.1f} ms (max {max(up) * 1000:.1f} ms, {len(up)} probes); "
        f"{len(closes)} flood connections closed, codes {sorted({c for c, _, _ in closes})}, "
        f"slowest close {max((s for _, s, _ in closes), default=math.inf):.3f} s; "
        f"{counted:.0f} counted"
    )
    print(figures)
    assert len(latencies) >= MEASURE_SECONDS / (PUBLISH_INTERVAL * 4), figures
    assert p99(latencies) < LATENCY_LIMIT, figures
    assert p99(up) < LATENCY_LIMIT, figures
    assert closes, figures
    assert all(code == 4100 for code, _, _ in closes), figures
    assert all(seconds < CLOSE_WITHIN for _, seconds, _ in closes), figures
    assert counted >= len(closes), figures
