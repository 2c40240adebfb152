"""One connection's Pusher session (protocol/session.py), with no socket and no event loop.

Messages go in as parsed client frames; the decisions and frames that come out are
checked, and the hub's answers are fed back as the connection would. Signatures are
computed here with hmac directly, not with the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from clarion.apps import limits_of
from clarion.config import AppConfig
from clarion.protocol import messages
from clarion.protocol.errors import CloseCode
from clarion.protocol.messages import ClientMessage
from clarion.protocol.names import ChannelKind, EventLimits
from clarion.protocol.session import (
    FEW_CHANNELS,
    ClientEvent,
    Close,
    Decision,
    Join,
    Leave,
    Reply,
    Session,
    SignIn,
)
from clarion.protocol.signing import Credentials

KEY, SECRET, SOCKET_ID = "app-key", "app-secret", "123.456"


@dataclass
class FakeApp:
    config: AppConfig
    credentials: Credentials = field(init=False)
    limits: EventLimits = field(init=False)

    def __post_init__(self) -> None:
        self.credentials = Credentials(self.config.key, self.config.secret)
        self.limits = limits_of(self.config)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Joined:
    """The hub's answer to a join, as the session reads it."""

    frames: list[bytes]
    new: bool = True


def new_session(clock: FakeClock | None = None, **settings: Any) -> Session[FakeApp]:
    config = AppConfig(id="1", key=KEY, secret=SECRET, **settings)
    session: Session[FakeApp]
    if clock is None:
        session = Session()
    else:
        fake = clock

        class Clocked(Session[FakeApp]):
            __slots__ = ()
            clock = staticmethod(fake)

        session = Clocked()
    session.start(FakeApp(config), SOCKET_ID, 50.0)
    return session


def sign(text: str, secret: str = SECRET) -> str:
    return f"{KEY}:" + hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def payload(frame: bytes) -> dict[str, Any]:
    """The JSON of a complete, unmasked server text frame."""
    assert frame[0] == 0x81
    length = frame[1]
    start = 2 if length < 126 else 4 if length == 126 else 10
    value = json.loads(frame[start:])
    assert isinstance(value, dict)
    return value


def message(event: str, data: Any = None, channel: str | None = None) -> ClientMessage:
    return ClientMessage(event, channel, data)


def subscribe(session: Session[FakeApp], channel: str, **data: Any) -> Decision | None:
    return session.receive(message("pusher:subscribe", {"channel": channel, **data}))


def reply(decision: Decision | None) -> dict[str, Any]:
    assert isinstance(decision, Reply), decision
    return payload(decision.frame)


def subscription_error(decision: Decision | None, channel: str) -> tuple[str, int, str]:
    frame = reply(decision)
    assert frame["event"] == "pusher:subscription_error"
    assert frame["channel"] == channel
    data = frame["data"]
    return data["type"], data["status"], data["error"]


def error(decision: Decision | None) -> tuple[int | None, str]:
    frame = reply(decision)
    assert frame["event"] == "pusher:error"
    return frame["data"]["code"], frame["data"]["message"]


def join(session: Session[FakeApp], channel: str, **data: Any) -> Join:
    """Subscribe and let the hub accept it as a new join."""
    decision = subscribe(session, channel, **data)
    assert isinstance(decision, Join), decision
    frames = session.subscribed(decision, Joined([messages.subscription_succeeded(channel)]))
    assert [payload(f)["event"] for f in frames] == ["pusher_internal:subscription_succeeded"]
    return decision


def sign_in(session: Session[FakeApp], user: dict[str, Any]) -> SignIn:
    user_data = json.dumps(user)
    auth = sign(f"{SOCKET_ID}::user::{user_data}")
    decision = session.receive(message("pusher:signin", {"user_data": user_data, "auth": auth}))
    assert isinstance(decision, SignIn), decision
    return decision


# --- opening, ping, unknown events ---------------------------------------------------


def test_start_answers_connection_established() -> None:
    config = AppConfig(id="1", key=KEY, secret=SECRET, activity_timeout=30)
    session: Session[FakeApp] = Session()
    frame = payload(session.start(FakeApp(config), "9.9", 12.5))
    assert frame["event"] == "pusher:connection_established"
    assert json.loads(frame["data"]) == {"socket_id": "9.9", "activity_timeout": 30}
    assert session.socket_id == "9.9"
    assert session.connected_at == session.last_seen == 12.5


def test_ping_is_answered_with_pong_and_pong_needs_nothing() -> None:
    session = new_session()
    assert reply(session.receive(message("pusher:ping", {}))) == {
        "event": "pusher:pong",
        "data": {},
    }
    assert session.receive(message("pusher:pong", {})) is None


def test_unknown_protocol_events_are_ignored_and_other_events_refused() -> None:
    session = new_session()
    assert session.receive(message("pusher:whatever", {})) is None
    assert error(session.receive(message("hello", {}))) == (
        None,
        "Unsupported event 'hello' from a client",
    )


def test_protocol_data_must_be_an_object_or_its_json() -> None:
    session = new_session()
    code, text = error(session.receive(message("pusher:subscribe", [1, 2])))
    assert code is None and "must be an object" in text
    code, text = error(session.receive(message("pusher:subscribe", "{nope")))
    assert code is None and "Invalid JSON" in text
    decision = session.receive(message("pusher:subscribe", json.dumps({"channel": "news"})))
    assert decision == Join("news", ChannelKind.PUBLIC)


# --- subscribe: public, cache, names, limits ------------------------------------------


def test_public_subscribe_joins_and_the_hub_answer_is_remembered() -> None:
    session = new_session()
    decision = subscribe(session, "news")
    assert decision == Join("news", ChannelKind.PUBLIC, None, None)
    assert set(session.channels) == set()  # not before the hub said so
    frames = [messages.subscription_succeeded("news")]
    assert session.subscribed(decision, Joined(frames)) is frames
    assert set(session.channels) == {"news"}
    assert session.authorized is False  # a public channel needs no authorisation


def test_a_duplicate_join_changes_nothing_but_answers() -> None:
    session = new_session(max_channels_per_connection=1)
    join(session, "news")
    decision = subscribe(session, "news")  # at the limit, but already subscribed
    assert isinstance(decision, Join)
    frames = [messages.subscription_succeeded("news")]
    assert session.subscribed(decision, Joined(frames, new=False)) == frames
    assert set(session.channels) == {"news"}


def test_connections_joining_a_channel_remember_one_string_for_it() -> None:
    first, second = new_session(), new_session()
    name = "".join(["ne", "ws"])  # not the literal's string object
    join(first, "news")
    join(second, name)
    (kept_first,) = first.channels
    (kept_second,) = second.channels
    assert kept_first is kept_second


def test_many_channels_are_kept_past_the_small_representation() -> None:
    # A tuple up to FEW_CHANNELS, a set beyond: the same channels either way, each once.
    session = new_session()
    names_ = [f"room-{i}" for i in range(FEW_CHANNELS + 3)]
    for name in names_:
        join(session, name)
        join(session, name)  # a second join the hub calls new changes nothing
        assert set(session.channels) == set(names_[: names_.index(name) + 1])
        assert len(session.channels) == names_.index(name) + 1
    for name in reversed(names_):
        decision = session.receive(message("pusher:unsubscribe", {"channel": name}))
        assert decision == Leave(name)
        assert name not in session.channels
        assert session.receive(message("pusher:unsubscribe", {"channel": name})) is None
    assert len(session.channels) == 0


def test_a_join_the_hub_calls_not_new_is_not_recorded() -> None:
    session = new_session()
    decision = subscribe(session, "news")
    assert isinstance(decision, Join)
    session.subscribed(decision, Joined([], new=False))
    assert set(session.channels) == set()


def test_cache_channels_follow_their_kind() -> None:
    session = new_session()
    assert subscribe(session, "cache-prices") == Join("cache-prices", ChannelKind.PUBLIC)
    kind, status, _ = subscription_error(subscribe(session, "private-cache-x"), "private-cache-x")
    assert (kind, status) == ("AuthError", 401)
    auth = sign(f"{SOCKET_ID}:private-cache-x")
    assert subscribe(session, "private-cache-x", auth=auth) == Join(
        "private-cache-x", ChannelKind.PRIVATE
    )


def test_a_missing_channel_is_a_pusher_error() -> None:
    session = new_session()
    assert error(session.receive(message("pusher:subscribe", {}))) == (
        None,
        "Missing parameter: data.channel",
    )
    assert error(session.receive(message("pusher:subscribe", {"channel": 5})))[1] == (
        "Missing parameter: data.channel"
    )


@pytest.mark.parametrize("channel", ["", "bad channel", "a" * 165, "#server-to-user-"])
def test_an_invalid_name_is_invalid_channel_400(channel: str) -> None:
    kind, status, _ = subscription_error(subscribe(new_session(), channel), channel)
    assert (kind, status) == ("InvalidChannel", 400)


def test_the_channels_per_connection_limit_is_limit_reached_4100() -> None:
    session = new_session(max_channels_per_connection=2)
    join(session, "a")
    join(session, "b")
    kind, status, text = subscription_error(subscribe(session, "c"), "c")
    assert (kind, status) == ("LimitReached", 4100)
    assert text == "A connection may subscribe to 2 channels"


# --- subscribe: private and encrypted -----------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "kind"),
    [("private-room", ChannelKind.PRIVATE), ("private-encrypted-room", ChannelKind.ENCRYPTED)],
)
def test_private_and_encrypted_need_auth_over_socket_and_channel(
    channel: str, kind: ChannelKind
) -> None:
    session = new_session()
    decision = subscribe(session, channel, auth=sign(f"{SOCKET_ID}:{channel}"))
    assert decision == Join(channel, kind)
    assert isinstance(decision, Join)
    session.subscribed(decision, Joined([]))
    assert set(session.channels) == {channel}
    assert session.authorized is True


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        (None, "Missing auth signature"),
        ("", "Missing auth signature"),
        ("no-colon", "Invalid key in auth token"),
        ("other-key:abc", "Invalid key in auth token"),
        ("app-key:" + "0" * 64, "Invalid signature"),
    ],
)
def test_bad_private_auth_is_auth_error_401(auth: str | None, problem: str) -> None:
    session = new_session()
    kind, status, text = subscription_error(
        subscribe(session, "private-room", auth=auth), "private-room"
    )
    assert (kind, status) == ("AuthError", 401)
    assert text.startswith(problem)
    assert set(session.channels) == set()
    assert session.authorized is False


def test_private_auth_for_another_socket_or_secret_is_refused() -> None:
    session = new_session()
    for auth in (sign("1.2:private-room"), sign(f"{SOCKET_ID}:private-room", "other-secret")):
        kind, _, _ = subscription_error(
            subscribe(session, "private-room", auth=auth), "private-room"
        )
        assert kind == "AuthError"


# --- subscribe: presence ------------------------------------------------------------------


def presence(
    session: Session[FakeApp], channel: str, channel_data: str, auth: str | None = None
) -> Decision | None:
    if auth is None:
        auth = sign(f"{SOCKET_ID}:{channel}:{channel_data}")
    return subscribe(session, channel, channel_data=channel_data, auth=auth)


def test_presence_joins_as_the_signed_member() -> None:
    session = new_session()
    data = json.dumps({"user_id": "ann", "user_info": {"name": "Ann"}})
    decision = presence(session, "presence-room", data)
    assert decision == Join("presence-room", ChannelKind.PRESENCE, "ann", {"name": "Ann"})


def test_presence_integer_user_ids_become_strings() -> None:
    decision = presence(new_session(), "presence-room", json.dumps({"user_id": 42}))
    assert isinstance(decision, Join)
    assert decision.user_id == "42"
    assert decision.user_info is None


def test_presence_without_channel_data_and_not_signed_in_is_401() -> None:
    session = new_session()
    auth = sign(f"{SOCKET_ID}:presence-room")
    kind, status, text = subscription_error(
        subscribe(session, "presence-room", auth=auth), "presence-room"
    )
    assert (kind, status) == ("AuthError", 401)
    assert "Missing channel_data" in text


def test_presence_auth_must_cover_the_channel_data() -> None:
    session = new_session()
    data = json.dumps({"user_id": "ann"})
    forged = json.dumps({"user_id": "admin"})
    decision = presence(
        session, "presence-room", forged, auth=sign(f"{SOCKET_ID}:presence-room:{data}")
    )
    kind, status, text = subscription_error(decision, "presence-room")
    assert (kind, status) == ("AuthError", 401)
    assert text.startswith("Invalid signature")


@pytest.mark.parametrize(
    "channel_data", ["not json", "[1]", json.dumps({"user_id": ""}), json.dumps({"name": "x"})]
)
def test_unusable_channel_data_is_auth_error_400(channel_data: str) -> None:
    kind, status, _ = subscription_error(
        presence(new_session(), "presence-room", channel_data), "presence-room"
    )
    assert (kind, status) == ("AuthError", 400)


def test_presence_member_limits_are_limit_reached_413() -> None:
    session = new_session()
    kind, status, text = subscription_error(
        presence(session, "presence-room", json.dumps({"user_id": "u" * 129})), "presence-room"
    )
    assert (kind, status) == ("LimitReached", 413)
    assert "128 characters" in text
    assert isinstance(presence(session, "presence-room", json.dumps({"user_id": "u" * 128})), Join)

    big = json.dumps({"user_id": "ann", "user_info": {"bio": "x" * 1100}})
    kind, status, text = subscription_error(
        presence(session, "presence-room", big), "presence-room"
    )
    assert (kind, status) == ("LimitReached", 413)
    assert "1024 bytes" in text


def test_a_full_presence_channel_is_limit_reached_4100() -> None:
    session = new_session()
    decision = presence(session, "presence-room", json.dumps({"user_id": "ann"}))
    assert isinstance(decision, Join)
    frame = payload(session.presence_full(decision.channel, 7))
    assert frame["event"] == "pusher:subscription_error"
    assert frame["data"] == {
        "type": "LimitReached",
        "error": "Presence channel is full (7 members)",
        "status": 4100,
    }
    assert set(session.channels) == set()


def test_a_signed_in_user_may_omit_channel_data() -> None:
    session = new_session()
    signin = sign_in(session, {"id": "ann", "user_info": {"name": "Ann"}})
    session.signed_in(signin, None)
    auth = sign(f"{SOCKET_ID}:presence-room")
    decision = subscribe(session, "presence-room", auth=auth)
    assert decision == Join("presence-room", ChannelKind.PRESENCE, "ann", {"name": "Ann"})
    # Still signed over socket_id:channel, and the member limits still apply.
    kind, status, _ = subscription_error(
        subscribe(session, "presence-room", auth=sign("1.1:presence-room")), "presence-room"
    )
    assert (kind, status) == ("AuthError", 401)


# --- subscribe: server-to-user --------------------------------------------------------------


def test_server_to_user_needs_to_be_signed_in_as_that_user() -> None:
    session = new_session()
    channel = "#server-to-user-ann"
    kind, status, _ = subscription_error(subscribe(session, channel), channel)
    assert (kind, status) == ("AuthError", 401)
    session.signed_in(sign_in(session, {"id": "bob"}), None)
    kind, status, _ = subscription_error(subscribe(session, channel), channel)
    assert (kind, status) == ("AuthError", 401)
    session.signed_in(sign_in(session, {"id": "ann"}), None)
    assert subscribe(session, channel) == Join(channel, ChannelKind.SERVER_TO_USER)


# --- unsubscribe ----------------------------------------------------------------------


def test_unsubscribe_forgets_the_channel_at_once() -> None:
    session = new_session()
    join(session, "news")
    decision = session.receive(message("pusher:unsubscribe", {"channel": "news"}))
    assert decision == Leave("news")
    assert set(session.channels) == set()


def test_unsubscribe_of_an_unknown_channel_does_nothing() -> None:
    session = new_session()
    join(session, "news")
    assert session.receive(message("pusher:unsubscribe", {"channel": "other"})) is None
    assert session.receive(message("pusher:unsubscribe", {})) is None
    assert set(session.channels) == {"news"}


# --- sign-in ----------------------------------------------------------------------------


def test_signin_signs_in_and_answers_with_the_watchlist() -> None:
    session = new_session()
    user = {"id": "ann", "user_info": {"name": "Ann"}, "watchlist": ["bob", "bob", "cy"]}
    decision = sign_in(session, user)
    assert decision.user.id == "ann"
    assert decision.watchlist == ["bob", "cy"]
    assert decision.previous is None
    assert session.user is None  # not before the hub said so
    watchlist = messages.watchlist_events([("online", ["bob"])])
    frames = session.signed_in(decision, watchlist)
    first = payload(frames[0])
    assert first["event"] == "pusher:signin_success"
    assert json.loads(first["data"]) == {"user_data": decision.user_data}
    assert frames[1] is watchlist
    assert session.user == decision.user
    assert session.authorized is True


def test_signin_without_a_watchlist_frame_answers_signin_success_only() -> None:
    session = new_session()
    frames = session.signed_in(sign_in(session, {"id": "ann"}), None)
    assert [payload(f)["event"] for f in frames] == ["pusher:signin_success"]


def test_watchlist_events_off_means_no_watchlist() -> None:
    session = new_session(watchlist_events=False)
    assert sign_in(session, {"id": "ann", "watchlist": ["bob"]}).watchlist == []


def test_a_second_signin_hands_over_the_previous_user() -> None:
    session = new_session()
    first = sign_in(session, {"id": "ann"})
    session.signed_in(first, None)
    second = sign_in(session, {"id": "bob"})
    assert second.previous == first.user
    assert session.user is None


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({}, "Invalid signin: missing user_data"),
        ({"user_data": 5}, "Invalid signin: missing user_data"),
        ({"user_data": '{"id":"ann"}'}, "Missing auth signature"),
        ({"user_data": '{"id":"ann"}', "auth": sign("1.1::user::{}")}, "Invalid signature"),
    ],
)
def test_a_bad_signin_closes_with_4009(data: dict[str, Any], text: str) -> None:
    session = new_session()
    decision = session.receive(message("pusher:signin", data))
    assert isinstance(decision, Close)
    assert decision.code is CloseCode.UNAUTHORIZED
    assert decision.message.startswith(text)
    assert session.user is None


@pytest.mark.parametrize(
    "user_data", ["nope", '{"id": ""}', '{"id": 5}', '{"id":"a","watchlist":[1]}']
)
def test_unusable_user_data_closes_with_4009(user_data: str) -> None:
    session = new_session()
    auth = sign(f"{SOCKET_ID}::user::{user_data}")
    decision = session.receive(message("pusher:signin", {"user_data": user_data, "auth": auth}))
    assert isinstance(decision, Close)
    assert decision.code is CloseCode.UNAUTHORIZED
    assert decision.message.startswith("Invalid signin: ")


# --- client events --------------------------------------------------------------------------


def client_event(
    session: Session[FakeApp], channel: str | None, event: str = "client-typing", data: Any = None
) -> Decision | None:
    return session.receive(message(event, {"text": "hi"} if data is None else data, channel))


def private_session(clock: FakeClock | None = None, **settings: Any) -> Session[FakeApp]:
    session = new_session(clock, client_events=True, **settings)
    join(session, "private-room", auth=sign(f"{SOCKET_ID}:private-room"))
    return session


def test_client_events_are_forwarded_on_subscribed_private_and_presence_channels() -> None:
    session = private_session()
    decision = client_event(session, "private-room")
    assert decision == ClientEvent("private-room", "client-typing", {"text": "hi"}, False)
    channel_data = json.dumps({"user_id": "ann"})
    join(
        session,
        "presence-room",
        channel_data=channel_data,
        auth=sign(f"{SOCKET_ID}:presence-room:{channel_data}"),
    )
    decision = client_event(session, "presence-room")
    assert isinstance(decision, ClientEvent)
    assert decision.presence is True


def test_the_forwarded_frame_names_the_presence_user() -> None:
    session = private_session()
    decision = client_event(session, "private-room")
    assert isinstance(decision, ClientEvent)
    frame = session.client_event_frame(decision, "ann")
    assert isinstance(frame, bytes)
    assert payload(frame) == {
        "event": "client-typing",
        "channel": "private-room",
        "data": {"text": "hi"},
        "user_id": "ann",
    }
    frame = session.client_event_frame(decision, None)
    assert isinstance(frame, bytes)
    assert "user_id" not in payload(frame)


def test_client_event_data_over_10_kib_is_refused() -> None:
    session = private_session()
    decision = client_event(session, "private-room", data="x" * (10 * 1024 - 2))  # JSON: +2
    assert isinstance(decision, ClientEvent)
    assert isinstance(session.client_event_frame(decision, None), bytes)
    decision = client_event(session, "private-room", data="x" * (10 * 1024))
    assert isinstance(decision, ClientEvent)
    refused = session.client_event_frame(decision, None)
    assert isinstance(refused, Reply)
    assert error(refused) == (None, "Client event data is larger than 10240 bytes")


def test_client_events_follow_the_apps_limits() -> None:
    session = private_session(max_event_payload_kb=1, max_event_name_length=20)
    decision = client_event(session, "private-room", data="x" * (1024 - 2))
    assert isinstance(decision, ClientEvent)
    assert isinstance(session.client_event_frame(decision, None), bytes)
    decision = client_event(session, "private-room", data="x" * 1024)
    assert isinstance(decision, ClientEvent)
    assert error(session.client_event_frame(decision, None)) == (
        None,
        "Client event data is larger than 1024 bytes",
    )
    assert isinstance(client_event(session, "private-room", "client-" + "x" * 13), ClientEvent)
    assert error(client_event(session, "private-room", "client-" + "x" * 14)) == (
        None,
        "Client event name is longer than 20 characters",
    )
    raised = private_session(max_event_payload_kb=64, max_event_name_length=300)
    decision = client_event(raised, "private-room", data="x" * (40 * 1024))
    assert isinstance(decision, ClientEvent)
    assert isinstance(raised.client_event_frame(decision, None), bytes)
    assert isinstance(client_event(raised, "private-room", "client-" + "x" * 250), ClientEvent)


def test_subscribe_follows_the_apps_channel_name_limit_up_to_164() -> None:
    short = new_session(max_channel_name_length=10)
    assert isinstance(subscribe(short, "a" * 10), Join)
    kind, status, _ = subscription_error(subscribe(short, "a" * 11), "a" * 11)
    assert (kind, status) == ("InvalidChannel", 400)
    # A higher cap keeps the protocol's 164 characters for subscribe.
    long = new_session(max_channel_name_length=500)
    assert isinstance(subscribe(long, "a" * 164), Join)
    kind, status, _ = subscription_error(subscribe(long, "a" * 165), "a" * 165)
    assert (kind, status) == ("InvalidChannel", 400)


def test_a_known_public_channel_still_meets_each_apps_name_limit() -> None:
    # A long name subscribed to under a high cap is known to the session module then;
    # another app's lower cap still refuses it.
    name = "known-" + "b" * 20
    assert isinstance(subscribe(new_session(max_channel_name_length=100), name), Join)
    short = new_session(max_channel_name_length=10)
    kind, status, _ = subscription_error(subscribe(short, name), name)
    assert (kind, status) == ("InvalidChannel", 400)


def test_a_known_public_channel_still_counts_against_the_channels_cap() -> None:
    for name in ("known-a", "known-b"):
        assert isinstance(subscribe(new_session(), name), Join)
    session = new_session(max_channels_per_connection=1)
    join(session, "known-a")
    kind, status, _ = subscription_error(subscribe(session, "known-b"), "known-b")
    assert (kind, status) == ("LimitReached", 4100)
    # The channel it has is subscribed to again, not refused.
    assert isinstance(subscribe(session, "known-a"), Join)


def test_client_event_rules_in_order() -> None:
    disabled = new_session()
    join(disabled, "private-room", auth=sign(f"{SOCKET_ID}:private-room"))
    code, text = error(client_event(disabled, "private-room"))
    assert code is None and "enable this feature" in text

    session = private_session()
    join(session, "news")
    assert error(client_event(session, None)) == (None, "Client events need a channel")
    assert error(client_event(session, "news")) == (
        None,
        "Client events are only allowed on private and presence channels, not news",
    )
    assert error(client_event(session, "private-other")) == (
        None,
        "Subscribe to private-other before sending client events on it",
    )
    assert error(client_event(session, "private-room", "client-" + "x" * 194)) == (
        None,
        "Client event name is longer than 200 characters",
    )
    # The disabled check comes first, whatever else is wrong.
    assert "enable this feature" in error(client_event(disabled, None))[1]


def test_client_event_refusals_do_not_use_the_rate_window() -> None:
    session = private_session(client_event_rate_limit=1)
    for _ in range(3):
        assert isinstance(client_event(session, "private-other"), Reply)
    assert isinstance(client_event(session, "private-room"), ClientEvent)


def test_the_client_event_rate_window_is_one_second() -> None:
    clock = FakeClock()
    session = private_session(clock, client_event_rate_limit=2)
    assert isinstance(client_event(session, "private-room"), ClientEvent)
    clock.now += 0.5
    assert isinstance(client_event(session, "private-room"), ClientEvent)
    clock.now += 0.4
    assert error(client_event(session, "private-room")) == (
        4301,
        "Client event rejected due to rate limit",
    )
    clock.now += 0.1  # one second after the window opened: a new window
    assert isinstance(client_event(session, "private-room"), ClientEvent)
    assert isinstance(client_event(session, "private-room"), ClientEvent)
    assert error(client_event(session, "private-room"))[0] == 4301


# --- activity ----------------------------------------------------------------------------


def test_a_quiet_client_is_pinged_then_closed_without_a_pong() -> None:
    session = new_session(activity_timeout=30)  # started at 50.0
    assert session.activity(79.0, pong_timeout=10) is None
    ping = session.activity(80.0, pong_timeout=10)
    assert isinstance(ping, Reply)
    assert payload(ping.frame) == {"event": "pusher:ping", "data": {}}
    assert session.ping_sent_at == 80.0
    assert session.activity(90.0, pong_timeout=10) is None  # one ping, then wait
    closed = session.activity(90.5, pong_timeout=10)
    assert isinstance(closed, Close)
    assert closed.code is CloseCode.PONG_TIMEOUT


def test_any_data_answers_the_ping() -> None:
    session = new_session(activity_timeout=30)
    assert isinstance(session.activity(80.0, pong_timeout=10), Reply)
    # What the connection does as bytes arrive.
    session.last_seen, session.ping_sent_at = 85.0, 0.0
    assert session.activity(100.0, pong_timeout=10) is None
    assert isinstance(session.activity(115.0, pong_timeout=10), Reply)


def test_an_unauthorised_connection_is_closed_after_the_deadline() -> None:
    session = new_session(user_authentication_timeout=5.0)  # started at 50.0
    assert session.activity(55.0, pong_timeout=10) is None
    closed = session.activity(55.5, pong_timeout=10)
    assert isinstance(closed, Close)
    assert closed.code is CloseCode.UNAUTHORIZED
    assert closed.message == "Connection not authorized within timeout."

    authorised = new_session(user_authentication_timeout=5.0)
    join(authorised, "private-room", auth=sign(f"{SOCKET_ID}:private-room"))
    assert authorised.activity(55.5, pong_timeout=10) is None


# --- the end -----------------------------------------------------------------------------


def test_ended_hands_over_channels_and_user_once() -> None:
    session = new_session()
    join(session, "news")
    signin = sign_in(session, {"id": "ann"})
    session.signed_in(signin, None)
    channels, user = session.ended()
    assert set(channels) == {"news"}
    assert user == signin.user
    assert session.ended() == ((), None)
