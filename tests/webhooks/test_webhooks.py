"""Webhooks delivered to a real HTTP receiver, checked with the official SDK validators."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pusher

from tests.support.config import OTHER_APP, app, build_config
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Received, Receiver

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")
ALL_TYPES = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
    "user_online",
    "user_offline",
]


def _config(
    receiver: Receiver, targets: list[dict[str, Any]] | None = None, **app_settings: Any
) -> str:
    if targets is None:
        targets = [{"url": f"{receiver.url}/all", "event_types": ALL_TYPES}]
    return build_config(
        app(client_events=True, subscription_count_events=True, webhooks=targets, **app_settings),
        webhooks={"timeout": 2.0},
    )


def _node_valid(requests: list[Received]) -> list[bool]:
    """Run pusher-http-node's ``webhook().isValid()`` on each received request."""
    script = """
const Pusher = require("pusher");
const pusher = new Pusher({appId: "1", key: "app-key", secret: "app-secret"});
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const valid = input.map(r => pusher.webhook({headers: r.headers, rawBody: r.body}).isValid());
console.log(JSON.stringify(valid));
"""
    payload = json.dumps([{"headers": r.headers, "body": r.body.decode()} for r in requests])
    out = subprocess.run(
        ["node", "-e", script],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_PATH": str(Path(ROOT) / "tests" / "js" / "node_modules")},
        timeout=30,
    )
    result: list[bool] = json.loads(out.stdout)
    return result


def _python_valid(request: Received) -> bool:
    result = SDK.validate_webhook(
        request.headers["x-pusher-key"], request.headers["x-pusher-signature"], request.body
    )
    return result is not None


def _names(receiver: Receiver, path: str | None = None) -> list[str]:
    return [event["name"] for event in receiver.events(path)]


def test_every_event_type_arrives_signed_and_valid(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(_config(receiver, webhook_delay=0))

    async def main() -> None:
        alice = await ws_connect(server.ws())
        bob = await ws_connect(server.ws())
        sa, sb = await established(alice), await established(bob)
        await alice.send(
            json.dumps({"event": "pusher:signin", "data": SDK.authenticate_user(sa, {"id": "a"})})
        )
        assert (await recv_json(alice))["event"] == "pusher:signin_success"
        await subscribe(alice, "public-hooks")
        await subscribe(alice, "cache-hooks")  # nothing cached: a miss
        assert (await recv_json(alice))["event"] == "pusher:cache_miss"
        for ws, sid, user in ((alice, sa, "a"), (bob, sb, "b")):
            auth = SDK.authenticate("presence-hooks", sid, {"user_id": user})
            assert (await subscribe(ws, "presence-hooks", **auth))["event"].endswith("succeeded")
        await bob.send(
            json.dumps({"event": "client-hi", "channel": "presence-hooks", "data": {"x": 1}})
        )
        receiver.wait_for(lambda _: "client_event" in _names(receiver))
        receiver.wait_for(lambda _: "subscription_count" in _names(receiver))
        await alice.close()
        await bob.close()

    asyncio.run(main())
    requests = receiver.wait_for(
        lambda _: set(ALL_TYPES) <= set(_names(receiver)) and "channel_vacated" in _names(receiver)
    )
    for request in requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-pusher-key"] == "app-key"
        assert isinstance(request.payload["time_ms"], int)
        assert _python_valid(request), request.body
    assert all(_node_valid(requests))
    events = receiver.events()
    client = next(e for e in events if e["name"] == "client_event")
    assert client == {
        "name": "client_event",
        "channel": "presence-hooks",
        "event": "client-hi",
        "data": '{"x":1}',
        "socket_id": client["socket_id"],
        "user_id": "b",
    }
    added = sorted(e["user_id"] for e in events if e["name"] == "member_added")
    assert added == ["a", "b"]
    assert {"name": "user_online", "user_id": "a"} in events
    assert {"name": "user_offline", "user_id": "a"} in events
    # One cause, ordered: occupied before member_added; member_removed before vacated.
    names = [(e["name"], e.get("channel")) for e in events]
    assert names.index(("channel_occupied", "presence-hooks")) < names.index(
        ("member_added", "presence-hooks")
    )
    assert names.index(("member_removed", "presence-hooks")) < names.index(
        ("channel_vacated", "presence-hooks")
    )


def test_tampered_webhook_is_rejected_by_the_validators(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(_config(receiver, webhook_delay=0))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "tamper")
        await ws.close()

    asyncio.run(main())
    request = receiver.wait_for(lambda r: len(r) >= 1)[0]
    forged = Received(
        request.path, request.headers, request.body.replace(b"tamper", b"tampex"), 200, 0
    )
    assert _python_valid(request) and not _python_valid(forged)
    assert _node_valid([request, forged]) == [True, False]


def test_vacated_is_held_and_cancelled_by_a_quick_rejoin(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(_config(receiver, webhook_delay=1.0, webhook_batch_window=0))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        sid = await established(ws)
        auth = SDK.authenticate("presence-reload", sid, {"user_id": "u1"})
        await subscribe(ws, "presence-reload", **auth)
        receiver.wait_for(lambda _: "member_added" in _names(receiver))
        # A page reload: the socket goes, a new one joins within the delay.
        await ws.close()
        again = await ws_connect(server.ws())
        sid = await established(again)
        auth = SDK.authenticate("presence-reload", sid, {"user_id": "u1"})
        await subscribe(again, "presence-reload", **auth)
        # The user really leaves now: after the delay, removed and vacated arrive.
        await again.close()

    asyncio.run(main())
    receiver.wait_for(lambda _: {"channel_vacated", "member_removed"} <= set(_names(receiver)))
    # Separate requests may arrive in any order; what matters is that the cancelled pair
    # (removed + added, vacated + occupied of the reload) never arrived.
    assert sorted(_names(receiver)) == sorted(
        ["channel_occupied", "member_added", "member_removed", "channel_vacated"]
    )
    removed_at = next(r.at for r in receiver.requests if "member_removed" in r.names)
    added_at = next(r.at for r in receiver.requests if "member_added" in r.names)
    assert removed_at - added_at >= 1.0  # held for the delay


def test_events_in_a_window_are_batched(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(_config(receiver, webhook_delay=0, webhook_batch_window=0.5))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        for index in range(5):
            await subscribe(ws, f"batch-{index}")
        receiver.wait_for(lambda _: _names(receiver).count("channel_occupied") == 5)
        await ws.close()

    asyncio.run(main())
    occupied = [r for r in receiver.requests if "channel_occupied" in r.names]
    assert len(occupied) == 1 and occupied[0].names.count("channel_occupied") == 5


def test_failed_deliveries_are_retried_and_arrive_once(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    receiver.scripts["/flaky"] = [500, 500, 200]
    targets = [{"url": f"{receiver.url}/flaky", "event_types": ["channel_occupied"]}]
    server = make_server(_config(receiver, targets, webhook_delay=0))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "retry-me")
        receiver.wait_for(lambda r: any(x.status == 200 for x in r), timeout=20)

        def stats() -> tuple[int, int, int, int]:
            status, body, _ = signed(server.host, server.port, "GET", "/apps/1/webhooks/status")
            assert status == 200
            return body["sent"], body["failed"], body["retrying"], body["dropped"]

        # The receiver records a request before answering it: the count follows shortly.
        await eventually(lambda: stats() == (1, 2, 0, 0))
        await ws.close()

    asyncio.run(main())
    attempts = [r for r in receiver.requests if r.path == "/flaky"]
    assert [r.status for r in attempts] == [500, 500, 200]
    assert receiver.events("/flaky") == [{"name": "channel_occupied", "channel": "retry-me"}]
    # Each attempt is signed afresh with its own time.
    assert len({r.payload["time_ms"] for r in attempts}) == 3
    assert all(_python_valid(r) for r in attempts)


def test_a_hanging_receiver_does_not_delay_other_targets_or_apps(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    receiver.scripts["/hang"] = ["hang"]

    def occupied_to(*paths: str) -> list[dict[str, Any]]:
        return [{"url": receiver.url + path, "event_types": ["channel_occupied"]} for path in paths]

    unbatched = {"webhook_delay": 0, "webhook_batch_window": 0}
    config = build_config(
        app(**unbatched, webhooks=occupied_to("/hang", "/same-app")),
        {**OTHER_APP, **unbatched, "webhooks": occupied_to("/other-app")},
        webhooks={"timeout": 20.0, "shutdown_deadline": 0.5},
    )
    server = make_server(config)

    async def main() -> None:
        one = await ws_connect(server.ws())
        two = await ws_connect(server.ws("other-key"))
        await established(one)
        await established(two)
        for index in range(6):  # more than the hanging target's concurrency
            await subscribe(one, f"stuck-{index}")
        receiver.wait_for(lambda r: sum(x.path == "/hang" for x in r) >= 4)
        await subscribe(two, "free")
        await subscribe(one, "also-free")
        receiver.wait_for(lambda _: len(receiver.events("/other-app")) == 1, timeout=3)
        receiver.wait_for(lambda _: len(receiver.events("/same-app")) == 7, timeout=3)
        await one.close()
        await two.close()

    asyncio.run(main())


def test_held_webhooks_are_flushed_on_graceful_shutdown(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(_config(receiver, webhook_delay=60))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "shutdown-hooks")
        receiver.wait_for(lambda _: "channel_occupied" in _names(receiver))
        await ws.close()

    asyncio.run(main())
    assert server.stop() == 0
    receiver.wait_for(lambda _: "channel_vacated" in _names(receiver), timeout=5)


def test_a_token_in_the_webhook_url_stays_out_of_the_logs(
    receiver: Receiver, make_server: Callable[..., RunningServer]
) -> None:
    token = "t0ken-in-the-url"
    url = f"{receiver.url}/tokened?token={token}"
    targets = [{"url": url, "event_types": ["channel_occupied"]}]
    server = make_server(_config(receiver, targets))

    async def main() -> None:
        ws = await ws_connect(server.ws())
        await established(ws)
        await subscribe(ws, "logged")
        receiver.wait_for(lambda _: len(receiver.events()) == 1)
        await ws.close()

    asyncio.run(main())
    assert receiver.requests[0].path.endswith(f"token={token}")  # it was used...
    assert any("token=<redacted>" in line for line in server.output)  # ...and shown masked
    assert not [line for line in server.output if token in line]
