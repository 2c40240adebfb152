"""Private channels (auth checked) and cache channels, through pusher-js."""

from __future__ import annotations

import base64
import json

import pusher

from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def test_private_channel_with_node_sdk_auth_receives_events(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-my-channel-{uid}"
    client = js.client("client")
    client.subscribe(channel)

    pusher_client.trigger(channel, "secret-event", {"some": "data"})

    assert client.wait_event(channel, "secret-event")["data"] == {"some": "data"}
    assert client.inspect(channel)["channel"]["subscribed"] is True


def test_private_channel_with_python_sdk_auth(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-my-channel-{uid}"
    client = js.client("client")
    assert client.socket_id is not None
    auth = pusher_client.authenticate(channel=channel, socket_id=client.socket_id)

    client.subscribe(channel, auth_response=auth)

    pusher_client.trigger(channel, "secret-event", "hello")
    assert client.wait_event(channel, "secret-event")["data"] == "hello"


def test_private_channel_bad_auth_is_subscription_error_401(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel, public = f"private-my-channel-{uid}", f"public-{uid}"
    client = js.client("client")
    client.subscribe(public)

    client.subscribe(channel, secret="wrong-secret", wait=False)

    error = client.wait(type="subscription_error", channel=channel)
    assert error["data"]["type"] == "AuthError"
    assert error["data"]["status"] == 401
    assert client.find(type="subscription_succeeded", channel=channel) == []
    # pusher-js keeps the channel pending and unsubscribed (docs/protocol.md §10).
    assert client.inspect(channel)["channel"] == {
        "subscribed": False,
        "pending": True,
        "members": None,
    }
    # Not subscribed server-side: of a batch (delivered in order) only the public event
    # arrives, and the private channel is not occupied.
    pusher_client.trigger_batch(
        [
            {"channel": channel, "name": "leak", "data": "x"},
            {"channel": public, "name": "marker", "data": "y"},
        ]
    )
    client.wait_event(public, "marker")
    assert client.events(channel, "leak") == []
    assert pusher_client.channel_info(channel, ["subscription_count"]) == {
        "occupied": False,
        "subscription_count": 0,
    }


def test_private_auth_for_another_socket_is_rejected(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """A signature is bound to its socket_id: one made for another socket fails."""
    channel = f"private-my-channel-{uid}"
    client = js.client("client")
    other = js.client("other")
    assert other.socket_id is not None
    stolen = pusher_client.authenticate(channel=channel, socket_id=other.socket_id)

    client.subscribe(channel, auth_response=stolen, wait=False)

    error = client.wait(type="subscription_error", channel=channel)
    assert error["data"]["status"] == 401


def test_cache_channel_replays_the_last_event_to_a_late_subscriber(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"cache-prices-{uid}"
    # Published while nobody is subscribed (docs/protocol.md §15): both are cached, the last
    # one wins.
    pusher_client.trigger(channel, "price-updated", {"btc": 40000})
    pusher_client.trigger(channel, "price-updated", {"btc": 50000})

    client = js.client("late", raw=True)
    client.subscribe(channel)

    assert pusher_client.channel_info(channel, ["cache"])["cache"]["data"] == json.dumps(
        {"btc": 50000}
    )
    event = client.wait_event(channel, "price-updated")
    assert event["data"] == {"btc": 50000}
    assert client.wait_frame("price-updated", channel) == {
        "event": "price-updated",
        "channel": channel,
        "data": json.dumps({"btc": 50000}),
    }
    # Exactly one replay, after subscription_succeeded, and no cache_miss: a live event
    # published afterwards closes the sequence.
    pusher_client.trigger(channel, "marker", {})
    client.wait_event(channel, "marker")
    order = [
        r["type"] if r["type"] != "event" else r["event"]
        for r in client.find(channel=channel)
        if r["type"] in ("subscription_succeeded", "cache_miss")
        or (r["type"] == "event" and not r["event"].startswith("pusher:"))
    ]
    assert order == ["subscription_succeeded", "price-updated", "marker"]

    # docs/protocol.md §27: info=cache shows the event now cached.
    info = pusher_client.channel_info(channel, ["cache"])
    assert info["occupied"] is True
    assert info["cache"]["event"] == "marker"
    assert info["cache"]["data"] == "{}"
    assert 0 < info["cache"]["ttl"] <= 1800


def test_empty_cache_channel_sends_cache_miss(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"cache-empty-{uid}"
    client = js.client("client", raw=True)

    client.subscribe(channel)

    client.wait(type="cache_miss", channel=channel)
    assert client.wait_frame("pusher:cache_miss", channel) == {
        "event": "pusher:cache_miss",
        "channel": channel,
    }
    assert "cache" not in pusher_client.channel_info(channel, ["cache"])


def test_cache_channel_live_events_are_delivered_too(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"cache-live-{uid}"
    first = js.client("first")
    first.subscribe(channel)
    first.wait(type="cache_miss", channel=channel)

    pusher_client.trigger(channel, "tick", {"n": 1})
    assert first.wait_event(channel, "tick")["data"] == {"n": 1}

    second = js.client("second")
    second.subscribe(channel)
    assert second.wait_event(channel, "tick")["data"] == {"n": 1}
    assert second.find(type="cache_miss") == []


def test_private_and_presence_cache_channels(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    private, presence = f"private-cache-{uid}", f"presence-cache-{uid}"
    pusher_client.trigger(private, "state", {"v": 1})
    client = js.client("client")

    client.subscribe(private)
    client.subscribe(presence, presence={"user_id": "u", "user_info": {}})

    assert client.wait_event(private, "state")["data"] == {"v": 1}
    client.wait(type="cache_miss", channel=presence)


MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def test_encrypted_channel_payload_is_relayed_untouched(
    js: Driver, server: RunningServer, uid: str
) -> None:
    """docs/protocol.md §17: the server relays {nonce, ciphertext} as is; pusher-js decrypts it."""
    channel = f"private-encrypted-{uid}"
    client = js.client("client", raw=True, master_key=MASTER_KEY)
    client.subscribe(channel)
    encrypting = python_sdk(server, encryption_master_key_base64=MASTER_KEY)

    encrypting.trigger(channel, "from-python", {"secret": "message"})
    reply = js.node_sdk("trigger", channel, "from-node", {"also": "secret"}, master_key=MASTER_KEY)

    assert reply == {"status": 200, "body": {}}
    assert client.wait_event(channel, "from-python")["data"] == {"secret": "message"}
    assert client.wait_event(channel, "from-node")["data"] == {"also": "secret"}
    wire = json.loads(client.wait_frame("from-python", channel)["data"])
    assert set(wire) == {"nonce", "ciphertext"}
    assert "message" not in client.wait_frame("from-python", channel)["data"]
