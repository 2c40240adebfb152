"""Per-app limits on client events and subscriptions, with real pusher-js clients.

An app's ``max_event_payload_kb``, ``max_event_name_length`` and
``max_channel_name_length`` apply to what clients send as they do to HTTP publishes:
lowered, an event the defaults allow is refused with the usual ``pusher:error`` (and the
connection stays up); raised, an event the defaults refuse goes through.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.config import app, build_config
from tests.support.pusherjs import Driver, JsClient
from tests.support.server import RunningServer

LOWERED = app(
    client_events=True,
    max_event_payload_kb=1,
    max_event_name_length=20,
    max_channel_name_length=30,
)
RAISED = app(
    "2",
    "raised-key",
    "raised-secret",
    client_events=True,
    max_event_payload_kb=64,
    max_event_name_length=300,
)


def _pair(
    js: Driver, channel: str, key: str = "app-key", secret: str = "app-secret", app_id: str = "1"
) -> tuple[JsClient, JsClient]:
    sender = js.client(f"sender-{key}", key, secret, app_id)
    receiver = js.client(f"receiver-{key}", key, secret, app_id)
    for client in (sender, receiver):
        client.subscribe(channel)
    return sender, receiver


def _delivered(receiver: JsClient, channel: str, event: str) -> dict[str, object]:
    return receiver.wait(type="event", channel=channel, event=event)


def test_lowered_and_raised_client_event_limits(
    make_server: Callable[..., RunningServer], make_driver: Callable[..., Driver]
) -> None:
    server = make_server(build_config(LOWERED, RAISED, server={"host": "127.0.0.1"}))
    js = make_driver(server)

    # Lowered: 1 KiB of data and 20-character names.
    channel = "private-low"
    sender, receiver = _pair(js, channel)
    assert sender.trigger(channel, "client-ok", "x" * 1000) == {"sent": True}
    _delivered(receiver, channel, "client-ok")
    since = js.mark()
    sender.trigger(channel, "client-big", "x" * 2000)  # under the default 10 KiB
    error = sender.wait(type="pusher_error", since=since)
    assert error["data"] == {
        "code": None,
        "message": "Client event data is larger than 1024 bytes",
    }
    since = js.mark()
    sender.trigger(channel, "client-" + "n" * 14, {})  # 21 characters
    error = sender.wait(type="pusher_error", since=since)
    assert error["data"] == {
        "code": None,
        "message": "Client event name is longer than 20 characters",
    }
    # Both refusals left the connection up, and nothing reached the other subscriber.
    sender.trigger(channel, "client-after", {})
    _delivered(receiver, channel, "client-after")
    assert receiver.events(channel, "client-big") == []
    assert sender.inspect()["state"] == "connected"

    # A channel name over the app's 30 characters is refused at subscribe.
    long_channel = "private-" + "c" * 23  # 31 characters
    since = js.mark()
    sender.subscribe(long_channel, wait=False)
    failed = sender.wait(type="subscription_error", channel=long_channel, since=since)
    assert failed["data"]["status"] == 400

    # Raised: 40 KiB of data and a 250-character name, both over the defaults.
    channel = "private-high"
    sender, receiver = _pair(js, channel, "raised-key", "raised-secret", "2")
    data = "y" * (40 * 1024)
    assert sender.trigger(channel, "client-large", data) == {"sent": True}
    assert _delivered(receiver, channel, "client-large")["data"] == data
    name = "client-" + "z" * 243
    sender.trigger(channel, name, {"long": True})
    assert _delivered(receiver, channel, name)["data"] == {"long": True}
    assert sender.find(type="pusher_error") == []
