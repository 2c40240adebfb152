"""HTTP API bodies and query attributes: docs/protocol.md §24-§28 and §30."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from pusher.pusher_client import PusherClient

from clarion.protocol import api
from clarion.protocol.errors import ApiError
from tests.support.sdk import APP_ID, KEY, SECRET

# The Python SDK's client builds request bodies without sending them (make_request).
SDK = PusherClient(app_id=APP_ID, key=KEY, secret=SECRET, ssl=False, host="127.0.0.1", port=1)


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def status_of(call: Any, *args: Any) -> int:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value.status


def publish_status(**fields: Any) -> int:
    return status_of(api.parse_publish, body(**fields))


def batch_status(items: Any) -> int:
    return status_of(api.parse_batch, json.dumps({"batch": items}).encode())


def item(**overrides: Any) -> dict[str, Any]:
    return {"channel": "my-channel", "name": "ev", "data": "x", **overrides}


# --- POST /events ---------------------------------------------------------------------------


def test_python_sdk_trigger_body() -> None:
    raw = SDK.trigger.make_request(
        ["my-channel", "presence-room"], "my-event", {"message": "hello world"}, socket_id="123.456"
    ).body
    request = api.parse_publish(raw)
    assert request.name == "my-event"
    assert request.channels == ["my-channel", "presence-room"]
    assert request.data == '{"message": "hello world"}'  # the SDK's string, unchanged
    assert request.socket_id == "123.456"
    assert request.info == frozenset()


def test_node_sdk_trigger_body() -> None:
    raw = (
        b'{"name":"my-event","data":"{\\"message\\":\\"hello world\\"}",'
        b'"channels":["my-channel","presence-room"],"socket_id":"123.456",'
        b'"info":"subscription_count,user_count"}'
    )
    request = api.parse_publish(raw)
    assert request.name == "my-event"
    assert request.channels == ["my-channel", "presence-room"]
    assert request.data == '{"message":"hello world"}'
    assert request.socket_id == "123.456"
    assert request.info == frozenset({"user_count", "subscription_count"})


def test_python_sdk_non_ascii_body_is_decoded() -> None:
    text = "Zoë 💥 日本"
    raw = SDK.trigger.make_request("my-channel", "my-event", text).body
    assert raw.isascii()  # \uXXXX escapes, emoji as a surrogate pair
    assert api.parse_publish(raw).data == text


def test_single_channel_field() -> None:
    request = api.parse_publish(body(name="ev", channel="my-channel", data="x"))
    assert request.channels == ["my-channel"]


def test_missing_channels_and_channel_is_400() -> None:
    assert publish_status(name="ev", data="x") == 400


@pytest.mark.parametrize("channels", [[], "my-channel", {"a": 1}, None])
def test_channels_must_be_a_non_empty_array(channels: Any) -> None:
    assert publish_status(name="ev", data="x", channels=channels) == 400


def test_one_hundred_channels_are_accepted() -> None:
    channels = [f"c{i}" for i in range(100)]
    assert api.parse_publish(body(name="ev", channels=channels, data="x")).channels == channels


def test_one_hundred_and_one_channels_are_400() -> None:
    assert publish_status(name="ev", channels=[f"c{i}" for i in range(101)], data="x") == 400


@pytest.mark.parametrize(
    "channel", ["bad channel", "", "a" * 201, "#other", 5, None, "#server-to-user-"]
)
def test_invalid_channel_name_is_400(channel: Any) -> None:
    assert publish_status(name="ev", channels=["ok", channel], data="x") == 400


def test_channel_names_up_to_200_and_server_to_user_are_accepted() -> None:
    channels = ["a" * 200, "#server-to-user-user 42 é"]
    assert api.parse_publish(body(name="ev", channels=channels, data="x")).channels == channels


@pytest.mark.parametrize("name", ["pusher:ev", "pusher_internal:x", "", "e" * 201, None, 5])
def test_invalid_event_name_is_400(name: Any) -> None:
    assert publish_status(name=name, channels=["c"], data="x") == 400


def test_missing_name_is_400() -> None:
    assert publish_status(channels=["c"], data="x") == 400


def test_missing_data_is_400() -> None:
    assert publish_status(name="ev", channels=["c"]) == 400


@pytest.mark.parametrize(
    "data",
    [
        "x" * 10240,
        "é" * 5120,  # 2 bytes each: exactly 10240 bytes
        "€" * 3413 + "x",  # 3 bytes each: 10240 bytes
        "💥" * 2560,  # 4 bytes each: 10240 bytes
    ],
)
def test_data_of_10240_bytes_is_accepted(data: str) -> None:
    assert len(data.encode()) == 10240
    assert api.parse_publish(body(name="ev", channels=["c"], data=data)).data == data


@pytest.mark.parametrize(
    "data",
    [
        "x" * 10241,
        "é" * 5121,  # 5121 characters, 10242 bytes
        "€" * 3414,  # 3414 characters, 10242 bytes
        "💥" * 2561,  # 2561 characters, 10244 bytes
    ],
)
def test_data_over_10240_bytes_is_413(data: str) -> None:
    assert len(data.encode()) > 10240
    assert publish_status(name="ev", channels=["c"], data=data) == 413


def test_data_limit_counts_utf8_bytes_of_an_escaped_python_body() -> None:
    raw = SDK.trigger.make_request("my-channel", "my-event", "é" * 5121).body
    assert len(raw) < 40000 and raw.isascii()
    assert status_of(api.parse_publish, raw) == 413


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}'),
        ([1, "two"], '[1,"two"]'),
        (5, "5"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        ({"text": "Zoë"}, '{"text":"Zoë"}'),
    ],
)
def test_non_string_data_is_json_encoded(data: Any, expected: str) -> None:
    request = api.parse_publish(body(name="ev", channels=["c"], data=data))
    assert request.data == expected
    assert json.loads(request.data) == data


def test_non_string_data_is_measured_after_encoding() -> None:
    assert publish_status(name="ev", channels=["c"], data={"k": "x" * 10240}) == 413
    ok = {"k": "x" * (10240 - len('{"k":""}'))}
    assert len(api.parse_publish(body(name="ev", channels=["c"], data=ok)).data) == 10240


@pytest.mark.parametrize(
    "socket_id", ["123", "abc", "1.2.3", "", " 1.2", "1.2\n", 123.456, 1, ["1.2"]]
)
def test_invalid_socket_id_is_400(socket_id: Any) -> None:
    assert publish_status(name="ev", channels=["c"], data="x", socket_id=socket_id) == 400


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user_count", {"user_count"}),
        ("subscription_count", {"subscription_count"}),
        ("user_count,subscription_count", {"user_count", "subscription_count"}),
        ("subscription_count,user_count", {"user_count", "subscription_count"}),
        ("", set()),
    ],
)
def test_publish_info_attributes(raw: str, expected: set[str]) -> None:
    request = api.parse_publish(body(name="ev", channels=["presence-r"], data="x", info=raw))
    assert request.info == expected


@pytest.mark.parametrize("info", ["foo", "user_count,foo", "cache", "occupied", 5, ["user_count"]])
def test_unknown_publish_info_is_400(info: Any) -> None:
    assert publish_status(name="ev", channels=["c"], data="x", info=info) == 400


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"name":"ev",}', b"[]", b'"x"', b"null", b"\xff"]
)
def test_malformed_json_is_400(raw: bytes) -> None:
    assert status_of(api.parse_publish, raw) == 400
    assert status_of(api.parse_batch, raw) == 400


# --- POST /batch_events ---------------------------------------------------------------------


def test_python_sdk_trigger_batch_body() -> None:
    raw = SDK.trigger_batch.make_request(
        [
            {"channel": "my-channel", "name": "ev1", "data": {"x": 1}},
            {
                "channel": "presence-room",
                "name": "ev2",
                "data": "plain",
                "socket_id": "123.456",
                "info": "user_count",
            },
        ]
    ).body
    first, second = api.parse_batch(raw)
    assert (first.name, first.channels, first.data) == ("ev1", ["my-channel"], '{"x": 1}')
    assert (second.name, second.channels, second.data) == ("ev2", ["presence-room"], "plain")
    assert second.socket_id == "123.456"
    assert second.info == frozenset({"user_count"})
    assert first.socket_id is None and first.info == frozenset()


def test_node_sdk_trigger_batch_body() -> None:
    raw = (
        b'{"batch":[{"channel":"my-channel","name":"ev1","data":"{\\"x\\":1}"},'
        b'{"channel":"presence-room","name":"ev2","data":"plain","info":"user_count"}]}'
    )
    requests = api.parse_batch(raw)
    assert [(r.name, r.channels, r.data) for r in requests] == [
        ("ev1", ["my-channel"], '{"x":1}'),
        ("ev2", ["presence-room"], "plain"),
    ]


def test_batch_keeps_order_and_accepts_channels_too() -> None:
    items = [item(name=f"e{i}") for i in range(9)] + [
        {"channels": ["a", "b"], "name": "e9", "data": "x"}
    ]
    requests = api.parse_batch(json.dumps({"batch": items}).encode())
    assert [r.name for r in requests] == [f"e{i}" for i in range(10)]
    assert requests[-1].channels == ["a", "b"]


def test_batch_of_eleven_is_400() -> None:
    assert batch_status([item() for _ in range(11)]) == 400


@pytest.mark.parametrize("batch", [[], None, {}, "x", {"channel": "c", "name": "e", "data": "x"}])
def test_empty_or_non_array_batch_is_400(batch: Any) -> None:
    assert batch_status(batch) == 400


def test_missing_batch_is_400() -> None:
    assert status_of(api.parse_batch, b"{}") == 400


@pytest.mark.parametrize("position", [0, 4, 9])
def test_one_oversized_item_makes_the_batch_413(position: int) -> None:
    items = [item() for _ in range(10)]
    items[position] = item(data="é" * 5121)
    assert batch_status(items) == 413


def test_oversized_item_makes_the_batch_413_even_with_other_bad_items() -> None:
    # docs/protocol.md §25: an item whose data exceeds 10 240 bytes makes the whole request 413.
    items = [item(name="pusher:x"), item(), item(data="x" * 10241), item(channel="bad channel")]
    assert batch_status(items) == 413


@pytest.mark.parametrize(
    "bad",
    [
        item(name="pusher:x"),
        item(channel="bad channel"),
        item(socket_id="nope"),
        item(info="foo"),
        {"name": "ev", "data": "x"},
        {"channel": "c", "data": "x"},
        {"channel": "c", "name": "e"},
        "not an object",
        5,
    ],
)
def test_one_bad_item_makes_the_batch_400(bad: Any) -> None:
    items = [item(), item(), bad, item()]
    assert batch_status(items) == 400


def test_batch_item_data_at_limit_is_accepted() -> None:
    requests = api.parse_batch(json.dumps({"batch": [item(data="é" * 5120)]}).encode())
    assert requests[0].data == "é" * 5120


# --- GET /channels, /channels/{name}, /channels/{name}/users --------------------------------


def test_channels_query_without_params() -> None:
    assert api.parse_channels_query({}) == ("", frozenset())


def test_channels_query_prefix_only() -> None:
    assert api.parse_channels_query({"filter_by_prefix": "private-"}) == ("private-", frozenset())


@pytest.mark.parametrize("prefix", ["presence-", "presence-room", "presence-cache-"])
def test_channels_query_user_count_with_presence_prefix(prefix: str) -> None:
    params = {"filter_by_prefix": prefix, "info": "user_count"}
    assert api.parse_channels_query(params) == (prefix, frozenset({"user_count"}))


@pytest.mark.parametrize("prefix", [None, "", "private-", "presence", "my-presence-", "cache-"])
def test_channels_query_user_count_requires_presence_prefix(prefix: str | None) -> None:
    params = {"info": "user_count"}
    if prefix is not None:
        params["filter_by_prefix"] = prefix
    assert status_of(api.parse_channels_query, params) == 400


@pytest.mark.parametrize("info", ["cache", "foo", "user_count,foo"])
def test_channels_query_unknown_attributes_are_refused(info: str) -> None:
    params = {"filter_by_prefix": "presence-", "info": info}
    assert status_of(api.parse_channels_query, params) == 400


@pytest.mark.parametrize("prefix", ["", "private-", "presence-"])
def test_channels_query_allows_subscription_count(prefix: str) -> None:
    # docs/protocol.md §26 allows only user_count; Clarion's issue #2 asks for subscription_count
    # on GET /channels as well (soketi always reports it), for any prefix.
    params = {"filter_by_prefix": prefix, "info": "subscription_count"}
    assert api.parse_channels_query(params) == (prefix, {"subscription_count"})


@pytest.mark.parametrize(
    ("channel", "info", "expected"),
    [
        ("presence-room", "user_count,subscription_count", {"user_count", "subscription_count"}),
        ("presence-cache-room", "user_count", {"user_count"}),
        ("my-channel", "subscription_count", {"subscription_count"}),
        ("private-chat", "subscription_count", {"subscription_count"}),
        ("cache-prices", "cache", {"cache"}),
        ("my-channel", None, set()),
    ],
)
def test_channel_query(channel: str, info: str | None, expected: set[str]) -> None:
    params = {} if info is None else {"info": info}
    assert api.parse_channel_query(channel, params) == expected


@pytest.mark.parametrize(
    "channel",
    ["my-channel", "private-chat", "private-encrypted-x", "cache-x", "#server-to-user-u"],
)
def test_channel_query_user_count_only_on_presence(channel: str) -> None:
    assert status_of(api.parse_channel_query, channel, {"info": "user_count"}) == 400


@pytest.mark.parametrize("info", ["foo", "occupied", "subscription_count,bar"])
def test_channel_query_unknown_info_is_400(info: str) -> None:
    assert status_of(api.parse_channel_query, "presence-room", {"info": info}) == 400


@pytest.mark.parametrize("channel", ["bad channel", "", "a" * 201, "#nope"])
def test_channel_query_invalid_channel_is_400(channel: str) -> None:
    assert status_of(api.parse_channel_query, channel, {}) == 400


@pytest.mark.parametrize("channel", ["presence-room", "presence-cache-room"])
def test_users_on_presence_channel(channel: str) -> None:
    assert api.check_users_channel(channel) is None


@pytest.mark.parametrize(
    "channel",
    [
        "my-channel",
        "private-chat",
        "private-encrypted-x",
        "cache-x",
        "#server-to-user-u",
        "presence",
        "bad channel",
        "presence-" + "a" * 200,
    ],
)
def test_users_on_non_presence_or_invalid_channel_is_400(channel: str) -> None:
    assert status_of(api.check_users_channel, channel) == 400


# --- GET /channels reply -------------------------------------------------------------------

LISTED = ["presence-a", "presence-b.c=d@e,f;g", "presence-" + "x" * 150]


@pytest.mark.parametrize(
    ("subscriptions", "users", "entry"),
    [
        (None, None, lambda s, u: {}),
        (["3", "1", "17"], None, lambda s, u: {"subscription_count": s}),
        (None, ["2", "1", "15"], lambda s, u: {"user_count": u}),
        (
            ["3", "1", "17"],
            ["2", "1", "15"],
            lambda s, u: {"user_count": u, "subscription_count": s},
        ),
    ],
)
def test_channels_reply_is_the_json_of_the_counts(
    subscriptions: list[str] | None, users: list[str] | None, entry: Any
) -> None:
    raw = api.channels_reply(LISTED, subscriptions, users)
    expected = {
        name: entry(
            int(subscriptions[i]) if subscriptions else None, int(users[i]) if users else None
        )
        for i, name in enumerate(LISTED)
    }
    assert json.loads(raw) == {"channels": expected}
    assert list(json.loads(raw)["channels"]) == LISTED  # in the order given
    single = api.channels_reply(
        LISTED[:1], subscriptions and subscriptions[:1], users and users[:1]
    )
    assert json.loads(single) == {"channels": {LISTED[0]: expected[LISTED[0]]}}


def test_channels_reply_of_no_channels() -> None:
    assert json.loads(api.channels_reply([], [], None)) == {"channels": {}}
    assert json.loads(api.channels_reply([], None, None)) == {"channels": {}}


@pytest.mark.parametrize("odd", ['quote"d', "back\\slash", "new\nline", "caf\u00e9"])
def test_channels_reply_escapes_names_the_validator_would_refuse(odd: str) -> None:
    # Never listed in practice (names are validated at subscribe); still valid JSON.
    raw = api.channels_reply(["ok", odd], ["1", "2"], None)
    assert json.loads(raw) == {
        "channels": {"ok": {"subscription_count": 1}, odd: {"subscription_count": 2}}
    }


# --- error body -----------------------------------------------------------------------------


def test_error_body_shape() -> None:
    raw = api.error_body(413, "too big")
    assert msgspec.json.decode(raw) == {"error": "too big", "code": 413}
