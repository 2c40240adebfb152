"""Per-app limits on the HTTP API: each of ``max_event_payload_kb``,
``max_event_name_length``, ``max_channel_name_length``, ``max_event_channels`` and
``max_batch_size`` set lower and higher than Pusher's default on an app.

Over an app's limit the answer is today's (413 for the payload, 400 for the others, with
the same message naming the app's figure); under it, a request Pusher's default would
refuse is published. An app without settings keeps Pusher's defaults. The ``pusher`` SDK
sends what it can (it checks Pusher's defaults itself before sending, so requests over
them go out as raw signed requests).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pusher
import pytest
from pusher.errors import PusherBadRequest, PusherBadStatus

from tests.support.config import app, build_config
from tests.support.raw import established, recv_json, signed, subscribe, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer, start_server

LOW = app(
    "1",
    "low-key",
    "low-secret",
    max_event_payload_kb=1,
    max_event_name_length=10,
    max_channel_name_length=12,
    max_event_channels=2,
    max_batch_size=2,
)
HIGH = app(
    "2",
    "high-key",
    "high-secret",
    max_event_payload_kb=40,
    max_event_name_length=300,
    max_channel_name_length=300,
    max_event_channels=150,
    max_batch_size=25,
)
DEFAULT = app("3", "default-key", "default-secret")
CREDENTIALS = {app_["id"]: (app_["key"], app_["secret"]) for app_ in (LOW, HIGH, DEFAULT)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("limits"),
        build_config(LOW, HIGH, DEFAULT, server={"host": "127.0.0.1"}),
    )
    yield running
    running.stop()


def sdk(server: RunningServer, app_id: str) -> pusher.Pusher:
    key, secret = CREDENTIALS[app_id]
    return python_sdk(server, app_id=app_id, key=key, secret=secret)


def post(server: RunningServer, app_id: str, endpoint: str, body: Any) -> tuple[int, Any]:
    key, secret = CREDENTIALS[app_id]
    status, reply, _ = signed(
        server.host, server.port, "POST", f"/apps/{app_id}/{endpoint}", body, key, secret
    )
    return status, reply


def get(server: RunningServer, app_id: str, path: str) -> tuple[int, Any]:
    key, secret = CREDENTIALS[app_id]
    status, reply, _ = signed(
        server.host, server.port, "GET", f"/apps/{app_id}{path}", None, key, secret
    )
    return status, reply


def bad_request(error: PusherBadRequest) -> str:
    return str(json.loads(str(error))["error"])


# --- lower than Pusher's defaults ----------------------------------------------------------


def test_payload_over_a_lower_limit_is_413(server: RunningServer) -> None:
    client = sdk(server, "1")
    assert client.trigger("room", "e", "x" * 1024) == {}
    with pytest.raises(PusherBadStatus) as refused:
        client.trigger("room", "e", "x" * 1025)
    assert str(refused.value).startswith("413: ")
    message = "The data content of this event exceeds the allowed maximum (1024 bytes)"
    assert message in str(refused.value)
    with pytest.raises(PusherBadStatus) as batch:
        client.trigger_batch([{"channel": "room", "name": "e", "data": "x" * 2000}])
    assert str(batch.value).startswith("413: ") and message in str(batch.value)


def test_event_name_over_a_lower_limit_is_400(server: RunningServer) -> None:
    client = sdk(server, "1")
    assert client.trigger("room", "e" * 10, {}) == {}
    with pytest.raises(PusherBadRequest) as refused:
        client.trigger("room", "e" * 11, {})
    assert bad_request(refused.value) == "Event name is longer than 10 characters"
    with pytest.raises(PusherBadRequest) as batch:
        client.trigger_batch([{"channel": "room", "name": "e" * 11, "data": "{}"}])
    assert bad_request(batch.value) == "batch[0]: Event name is longer than 10 characters"


def test_channel_name_over_a_lower_limit_is_400(server: RunningServer) -> None:
    client = sdk(server, "1")
    assert client.trigger("c" * 12, "e", {}) == {}
    long = "c" * 13
    with pytest.raises(PusherBadRequest) as refused:
        client.trigger(long, "e", {})
    assert bad_request(refused.value).startswith("Channel name is longer than 12 characters")
    with pytest.raises(PusherBadRequest) as batch:
        client.trigger_batch([{"channel": long, "name": "e", "data": "{}"}])
    assert bad_request(batch.value).startswith("batch[0]: Channel name is longer than 12")
    # The channel queries check the app's figure too.
    assert client.channel_info("c" * 12) == {"occupied": False}
    with pytest.raises(PusherBadRequest) as info:
        client.channel_info(long)
    assert bad_request(info.value).startswith("Channel name is longer than 12 characters")
    assert client.users_info("presence-abc") == {"users": []}
    with pytest.raises(PusherBadRequest) as users:
        client.users_info("presence-abcd")
    assert bad_request(users.value).startswith("Channel name is longer than 12 characters")


def test_channels_over_a_lower_limit_are_400(server: RunningServer) -> None:
    client = sdk(server, "1")
    assert client.trigger(["a", "b"], "e", {}) == {}
    with pytest.raises(PusherBadRequest) as refused:
        client.trigger(["a", "b", "c"], "e", {})
    assert bad_request(refused.value) == "Too many channels: 3 > 2"


def test_batch_over_a_lower_limit_is_400(server: RunningServer) -> None:
    client = sdk(server, "1")
    event = {"channel": "room", "name": "e", "data": "{}"}
    assert client.trigger_batch([dict(event) for _ in range(2)]) == {}
    with pytest.raises(PusherBadRequest) as refused:
        client.trigger_batch([dict(event) for _ in range(3)])
    assert bad_request(refused.value) == "Too many events in batch: 3 > 2"


# --- higher than Pusher's defaults ---------------------------------------------------------


def test_higher_limits_publish_what_pusher_would_refuse(server: RunningServer) -> None:
    """Each request is over Pusher's default and under the app's: published, and a
    subscriber gets it whole."""
    long_channel = "c" * 164  # the longest a subscribe takes
    long_name = "n" * 300
    payload = "p" * (40 * 1024)

    async def main() -> None:
        ws = await ws_connect(server.ws("high-key"))
        await established(ws)
        await subscribe(ws, long_channel)
        status, _ = post(
            server,
            "2",
            "events",
            {"name": long_name, "channels": [long_channel], "data": payload},
        )
        assert status == 200
        event = await recv_json(ws)
        assert event["event"] == long_name and event["data"] == payload
        await ws.close()

    asyncio.run(main())
    channels = [f"ch-{n}" for n in range(150)]
    assert post(server, "2", "events", {"name": "e", "channels": channels, "data": "{}"})[0] == 200
    longest = "c" * 300
    assert post(server, "2", "events", {"name": "e", "channel": longest, "data": "{}"})[0] == 200
    assert get(server, "2", f"/channels/{longest}") == (200, {"occupied": False})
    assert get(server, "2", f"/channels/presence-{'u' * 291}/users") == (200, {"users": []})
    batch = [{"channel": "room", "name": "e", "data": "{}"} for _ in range(25)]
    assert sdk(server, "2").trigger_batch(batch) == {}
    # And just over the app's own figures: refused as with any limit.
    status, reply = post(
        server, "2", "events", {"name": "e", "channel": "room", "data": payload + "p"}
    )
    assert status == 413
    assert reply["error"] == (
        f"The data content of this event exceeds the allowed maximum ({40 * 1024} bytes)"
    )
    status, reply = post(server, "2", "events", {"name": "n" * 301, "channel": "r", "data": "{}"})
    assert (status, reply["error"]) == (400, "Event name is longer than 300 characters")
    status, reply = post(server, "2", "events", {"name": "e", "channel": "c" * 301, "data": "{}"})
    assert status == 400
    assert reply["error"].startswith("Channel name is longer than 300 characters")
    status, reply = post(
        server, "2", "events", {"name": "e", "channels": [*channels, "one-more"], "data": "{}"}
    )
    assert (status, reply["error"]) == (400, "Too many channels: 151 > 150")
    status, reply = post(server, "2", "batch_events", {"batch": [*batch, batch[0]]})
    assert (status, reply["error"]) == (400, "Too many events in batch: 26 > 25")


def test_an_app_without_settings_keeps_pushers_defaults(server: RunningServer) -> None:
    status, reply = post(
        server, "3", "events", {"name": "e", "channel": "room", "data": "p" * (10 * 1024 + 1)}
    )
    assert status == 413 and "(10240 bytes)" in reply["error"]
    status, reply = post(server, "3", "events", {"name": "n" * 201, "channel": "r", "data": "{}"})
    assert (status, reply["error"]) == (400, "Event name is longer than 200 characters")
    status, reply = get(server, "3", f"/channels/{'c' * 201}")
    assert status == 400
    assert reply["error"].startswith("Channel name is longer than 200 characters")
    channels = [f"ch-{n}" for n in range(101)]
    status, reply = post(server, "3", "events", {"name": "e", "channels": channels, "data": "1"})
    assert (status, reply["error"]) == (400, "Too many channels: 101 > 100")
    batch = [{"channel": "room", "name": "e", "data": "{}"} for _ in range(11)]
    status, reply = post(server, "3", "batch_events", {"batch": batch})
    assert (status, reply["error"]) == (400, "Too many events in batch: 11 > 10")
