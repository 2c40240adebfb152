"""Prometheus metrics: the counters and gauges follow a scripted run.

Every value is compared with a scrape taken before the run, so nothing depends on what
the server did at start.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from tests.support.metrics import Samples, metrics_url, scrape, value
from tests.support.polling import eventually
from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def test_metrics_follow_a_scripted_run(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    url = metrics_url(server)
    _, before = scrape(url)
    uid = uuid.uuid4().hex[:12]
    alpha, beta = f"metrics-alpha-{uid}", f"metrics-beta-{uid}"
    sdk = python_sdk(server)

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    def current() -> Samples:
        return scrape(url)[1]

    async def main() -> Samples:
        sockets = []
        for _ in range(4):
            ws = await ws_connect(server.ws())
            await established(ws)
            sockets.append(ws)
        one, two, three, dropped = sockets
        for ws in (one, two, three):
            reply = await subscribe(ws, alpha)
            assert reply["event"] == "pusher_internal:subscription_succeeded"
        reply = await subscribe(three, beta)
        assert reply["event"] == "pusher_internal:subscription_succeeded"
        await one.send(json.dumps({"event": "pusher:ping", "data": {}}))
        assert (await recv_json(one))["event"] == "pusher:pong"

        during = current()
        assert value(during, "clarion_connections", app="1") == 4
        assert value(during, "clarion_channels", app="1") == 2
        assert value(during, "clarion_subscriptions", app="1") == 4

        sdk.trigger(alpha, "first", {"n": 1})
        sdk.trigger(alpha, "second", {"n": 2})
        sdk.trigger(beta, "third", {"n": 3})
        sdk.trigger_batch([{"channel": alpha, "name": "batched", "data": "{}"}])
        status, _, _ = signed(
            server.host, server.port, "POST", "/apps/1/events",
            {"name": "refused", "channels": [alpha], "data": "{}"}, secret="wrong-secret",
        )  # fmt: skip
        assert status == 401
        for ws, events in (
            (one, ["first", "second", "batched"]),
            (two, ["first", "second", "batched"]),
            (three, ["first", "second", "third", "batched"]),
        ):
            got = [(await recv_json(ws))["event"] for _ in events]
            assert sorted(got) == sorted(events)

        # Refused at the handshake: an unknown key.
        refused = await ws_connect(server.ws("no-such-key"))
        error = await recv_json(refused)
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4001
        await asyncio.wait_for(refused.wait_closed(), 5)
        assert refused.close_code == 4001

        # One client closes cleanly (1000), one just goes away (no close frame).
        await one.close()
        dropped.transport.abort()
        await eventually(lambda: value(current(), "clarion_connections", app="1") == 2)
        middle = current()
        assert delta(middle, "clarion_connections_closed_total", app="1", code="1000") == 1
        assert delta(middle, "clarion_connections_closed_total", app="1", code="abnormal") == 1
        assert value(middle, "clarion_subscriptions", app="1") == 3

        for ws in (two, three):
            await ws.close()
        await eventually(lambda: value(current(), "clarion_connections", app="1") == 0)
        return current()

    after = asyncio.run(main())
    text, _ = scrape(url)

    assert delta(after, "clarion_connections_opened_total", app="1") == 4
    assert delta(after, "clarion_connections_closed_total", app="1", code="1000") == 3
    assert delta(after, "clarion_connections_closed_total", app="1", code="abnormal") == 1
    assert delta(after, "clarion_connections_refused_total", code="4001") == 1
    # 4 subscribes and a ping.
    assert delta(after, "clarion_messages_received_total", app="1") == 5
    assert delta(after, "clarion_received_bytes_total", app="1") > 0
    # first, second, batched to 3 subscribers each; third to 1.
    assert delta(after, "clarion_messages_sent_total", app="1") == 10
    assert delta(after, "clarion_sent_bytes_total", app="1") > 0
    assert delta(after, "clarion_http_requests_total", endpoint="events", status="200") == 3
    assert delta(after, "clarion_http_requests_total", endpoint="batch_events", status="200") == 1
    assert delta(after, "clarion_http_requests_total", endpoint="events", status="401") == 1
    assert delta(after, "clarion_publish_seconds_count") == 4
    assert delta(after, "clarion_publish_seconds_sum") > 0
    # One observation per frame fanned out, of the number of local subscribers written.
    assert delta(after, "clarion_fanout_subscribers_count") == 4
    assert delta(after, "clarion_fanout_subscribers_sum") == 10
    assert value(after, "clarion_connections", app="1") == 0
    assert value(after, "clarion_channels", app="1") == 0
    assert value(after, "clarion_subscriptions", app="1") == 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0

    # Bounded labels only: no channel name (nor any part of one) anywhere.
    assert uid not in text
    for (_, labels), _ in after.items():
        for _, label in labels:
            assert "metrics-" not in label and uid not in label
