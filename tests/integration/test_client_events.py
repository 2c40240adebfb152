"""Client events sent with pusher-js ``channel.trigger`` (docs/protocol.md §12, §17).

App 1 of the test config has ``client_events = true``; app 2 has them off. A client event
goes to every *other* subscriber of a private or presence channel; on presence channels
pusher-js hands the bound callback ``metadata.user_id`` of the sender. Refusals are
``pusher:error`` frames that leave the connection up.
"""

from __future__ import annotations

import base64

import pusher

from tests.support.pusherjs import Driver, JsClient
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def _no_error_yet(client: JsClient) -> None:
    assert client.find(type="pusher_error") == []


def test_private_channel_client_event_reaches_others_never_the_sender(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-chat-{uid}"
    sender, first, second = js.client("sender"), js.client("first"), js.client("second")
    for client in (sender, first, second):
        client.subscribe(channel)
        client.bind(channel, "client-typing")
        client.bind(channel, "client-reply")

    assert sender.trigger(channel, "client-typing", {"user": "sender"}) == {"sent": True}

    for receiver in (first, second):
        got = receiver.wait(type="bound", channel=channel, event="client-typing")
        assert got["data"] == {"user": "sender"}
        assert got["metadata"] == {}  # user_id only on presence channels
    # Not echoed: the sender's copy would have been written before first's reply.
    first.trigger(channel, "client-reply", "ok")
    sender.wait(type="bound", channel=channel, event="client-reply")
    assert sender.find(type="bound", event="client-typing") == []
    assert first.find(type="bound", event="client-reply") == []
    _no_error_yet(sender)
    _no_error_yet(first)


def test_presence_client_event_carries_the_senders_user_id(js: Driver, uid: str) -> None:
    room = f"presence-room-{uid}"
    alice, tab, bob = js.client("alice"), js.client("alice-tab"), js.client("bob")
    for client, user in ((alice, "alice"), (tab, "alice"), (bob, "bob")):
        client.subscribe(room, presence={"user_id": user, "user_info": {}})
        client.bind(room, "client-wave")

    alice.trigger(room, "client-wave", {"hi": True})

    # Every other socket gets it, the sender's own user's other tab included.
    for receiver in (bob, tab):
        got = receiver.wait(type="bound", channel=room, event="client-wave")
        assert got["data"] == {"hi": True}
        assert got["args"] == 2
        assert got["metadata"] == {"user_id": "alice"}
    bob.trigger(room, "client-wave", "back")
    back = alice.wait(type="bound", channel=room, event="client-wave")
    assert back["data"] == "back"
    assert back["metadata"] == {"user_id": "bob"}


def test_presence_client_event_user_id_of_a_signed_in_member(js: Driver, uid: str) -> None:
    """Member via sign-in (no channel_data): user_id is the signed-in id."""
    room = f"presence-room-{uid}"
    signed = js.client("signed")
    signed.signin({"id": f"signed-{uid}"})
    signed.subscribe(room)
    other = js.client("other")
    other.subscribe(room, presence={"user_id": "other", "user_info": {}})
    other.bind(room, "client-x")

    signed.trigger(room, "client-x", [1, 2])

    got = other.wait(type="bound", channel=room, event="client-x")
    assert got["data"] == [1, 2]
    assert got["metadata"] == {"user_id": f"signed-{uid}"}


def test_client_events_disabled_for_the_app_are_refused(
    js: Driver, server: RunningServer, uid: str
) -> None:
    channel = f"private-chat-{uid}"
    app2 = python_sdk(server, app_id="2", key="other-key", secret="other-secret")
    credentials = {"key": "other-key", "secret": "other-secret", "app_id": "2"}
    sender, receiver = js.client("sender", **credentials), js.client("receiver", **credentials)
    for client in (sender, receiver):
        client.subscribe(channel)
        client.bind(channel, "client-x")

    assert sender.trigger(channel, "client-x", {"n": 1}) == {"sent": True}

    error = sender.wait(type="pusher_error")
    assert "client events" in error["data"]["message"].lower()
    connection_error = sender.wait(type="error")
    assert connection_error["error"]["type"] == "PusherError"
    app2.trigger(channel, "marker", {})
    receiver.wait_event(channel, "marker")
    assert receiver.find(type="bound", event="client-x") == []
    # An error frame, not a close: the sender is still connected and subscribed.
    sender.wait_event(channel, "marker")
    assert sender.inspect()["state"] == "connected"
    assert sender.find(type="state", current="disconnected") == []


def test_client_event_on_a_public_channel_is_refused(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """pusher-js sends it without complaint; the server must refuse it
    (docs/protocol.md §12, rule 3)."""
    channel = f"public-chat-{uid}"
    sender, receiver = js.client("sender"), js.client("receiver")
    for client in (sender, receiver):
        client.subscribe(channel)

    assert sender.trigger(channel, "client-x", {}) == {"sent": True}

    assert sender.wait(type="pusher_error")["data"]["code"] is None
    pusher_client.trigger(channel, "marker", {})
    receiver.wait_event(channel, "marker")
    assert receiver.events(channel, "client-x") == []
    assert sender.inspect()["state"] == "connected"


def test_client_event_on_a_channel_the_sender_did_not_join_is_refused(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-chat-{uid}"
    outsider, member = js.client("outsider"), js.client("member")
    member.subscribe(channel)
    member.bind(channel, "client-x")

    outsider.send_event("client-x", {"sneaky": True}, channel)

    assert outsider.wait(type="pusher_error")["data"]["code"] is None
    pusher_client.trigger(channel, "marker", {})
    member.wait_event(channel, "marker")
    assert member.find(type="bound", event="client-x") == []


def test_client_event_data_over_10_kib_or_name_over_200_is_refused(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-chat-{uid}"
    long_ok, too_long = "client-" + "n" * 193, "client-" + "n" * 194  # 200 and 201 chars
    sender, receiver = js.client("sender"), js.client("receiver")
    for client in (sender, receiver):
        client.subscribe(channel)
    for event in ("client-big", long_ok, too_long):
        receiver.bind(channel, event)
    # A JSON string of n characters serialises to n + 2 bytes.
    fits, too_big = "x" * (10 * 1024 - 2), "x" * (10 * 1024 - 1)

    sender.trigger_many(
        channel,
        [("client-big", fits), ("client-big", too_big), (long_ok, "a"), (too_long, "b")],
    )

    errors = sender.wait_count(2, type="pusher_error")
    assert [e["data"]["code"] for e in errors] == [None, None]
    pusher_client.trigger(channel, "marker", {})
    receiver.wait_event(channel, "marker")
    got = [(r["event"], len(r["data"])) for r in receiver.find(type="bound")]
    assert got == [("client-big", len(fits)), (long_ok, 1)]
    sender.wait_event(channel, "marker")
    assert len(sender.find(type="pusher_error")) == 2
    assert sender.inspect()["state"] == "connected"


def test_client_event_rate_limit_is_10_per_second_with_4301(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    channel = f"private-chat-{uid}"
    sender, receiver = js.client("sender"), js.client("receiver")
    for client in (sender, receiver):
        client.subscribe(channel)
    receiver.bind(channel, "client-burst")

    results = sender.trigger_many(channel, [("client-burst", {"n": n}) for n in range(15)])

    assert results == [{"sent": True}] * 15
    # 15 within a second: the first 10 pass, each of the other 5 gets a 4301 error frame.
    errors = sender.wait_count(5, type="pusher_error")
    assert [e["data"]["code"] for e in errors] == [4301] * 5
    # The receiver got exactly the first ten, in order: a later event closes the sequence.
    pusher_client.trigger(channel, "marker", {})
    receiver.wait_event(channel, "marker")
    got = [r["data"]["n"] for r in receiver.find(type="bound", event="client-burst")]
    assert got == list(range(10))
    # 4301 is an error frame, never a close: the sender stays connected and subscribed.
    sender.wait_event(channel, "marker")
    assert len(sender.find(type="pusher_error")) == 5
    assert sender.inspect()["state"] == "connected"
    assert sender.find(type="state", current="disconnected") == []


def test_encrypted_channel_client_events_are_refused(
    js: Driver, pusher_client: pusher.Pusher, uid: str
) -> None:
    """pusher-js itself throws; a client that sends one anyway gets a pusher:error."""
    channel, public = f"private-encrypted-chat-{uid}", f"public-{uid}"
    sender = js.client("sender", master_key=MASTER_KEY)
    receiver = js.client("receiver", raw=True, master_key=MASTER_KEY)
    for client in (sender, receiver):
        client.subscribe(channel)
    receiver.subscribe(public)

    thrown = sender.trigger(channel, "client-x", {"secret": 1})
    assert "not currently supported for encrypted channels" in thrown["thrown"]["message"]

    sender.send_event("client-x", {"nonce": "AAAA", "ciphertext": "BBBB"}, channel)
    assert sender.wait(type="pusher_error")["data"]["code"] is None
    # The receiver's socket (raw frames, as pusher-js drops what it cannot decrypt) saw
    # no client event before a later marker.
    pusher_client.trigger(public, "marker", {})
    receiver.wait_frame("marker", public)
    frames = [r["text"] for r in receiver.find(type="raw")]
    assert not any("client-x" in text for text in frames)
    assert sender.inspect()["state"] == "connected"


def test_client_events_are_not_cached(js: Driver, uid: str) -> None:
    """docs/protocol.md §15: only HTTP-published events are cached; a late subscriber of a
    private-cache- channel gets cache_miss after a client event."""
    channel = f"private-cache-chat-{uid}"
    sender, receiver = js.client("sender"), js.client("receiver")
    for client in (sender, receiver):
        client.subscribe(channel)
    receiver.bind(channel, "client-x")
    sender.trigger(channel, "client-x", {"n": 1})
    receiver.wait(type="bound", channel=channel, event="client-x")

    late = js.client("late")
    late.subscribe(channel)

    late.wait(type="cache_miss", channel=channel)
    assert late.events(channel, "client-x") == []
