"""Server frames (exact WebSocket bytes and JSON shapes) and client-frame parsing.

Shapes follow docs/protocol.md §1-§4, §7, §10, §15 and §18. Frames are decoded here
with a small RFC 6455 parser of our own rather than the library that built them.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import msgspec
import pytest

from clarion.protocol import messages
from clarion.protocol.errors import BadMessage


def unframe(frame: bytes) -> bytes:
    """Payload of one complete, unmasked, final text frame (RFC 6455 §5.2); else fail."""
    assert frame[0] == 0x81, f"first byte {frame[0]:#04x}: expected FIN + text opcode"
    assert frame[1] & 0x80 == 0, "server frames must not be masked"
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        offset = 4
        assert length >= 126, "length not minimally encoded"
    elif length == 127:
        (length,) = struct.unpack("!Q", frame[2:10])
        offset = 10
        assert length >= 1 << 16, "length not minimally encoded"
    payload = frame[offset:]
    assert len(payload) == length, "frame length does not match its payload"
    return payload


def decode(frame: bytes) -> dict[str, Any]:
    payload = unframe(frame)
    value = json.loads(payload.decode("utf-8"))  # text frames carry UTF-8
    assert isinstance(value, dict)
    return value


# --- server -> client -----------------------------------------------------------------------


def test_connection_established_data_is_a_json_string() -> None:
    frame = decode(messages.connection_established("123456.7890123", 120))
    assert set(frame) == {"event", "data"}  # no channel
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"socket_id": "123456.7890123", "activity_timeout": 120}


@pytest.mark.parametrize(
    "socket_id", ["123456.7890123", "1.2", "abc", 'a"b\\c', "1.2.3", "\u0661.\u0662"]
)
def test_connection_established_is_the_encoded_frame(socket_id: str) -> None:
    # The server's own socket ids take a written-out path; any id gives the same bytes
    # as encoding the frame.
    data = json.dumps(
        {"socket_id": socket_id, "activity_timeout": 120}, separators=(",", ":"), ensure_ascii=False
    )
    expected = {"event": "pusher:connection_established", "data": data}
    frame = messages.connection_established(socket_id, 120)
    assert decode(frame) == expected
    assert frame == messages.ws_text(msgspec.json.encode(expected))


def test_connection_established_activity_timeout_is_an_integer() -> None:
    data = json.loads(decode(messages.connection_established("1.2", 30))["data"])
    assert data["activity_timeout"] == 30
    assert type(data["activity_timeout"]) is int


@pytest.mark.parametrize(
    "data",
    [
        '{"message":"hello world"}',
        '{"message": "hello world"}',  # spaced (Python SDK): not re-encoded
        "plain",  # not JSON: delivered as-is
        "",
        '"quoted"',
        "Zoë 💥 日本 \u2028",
        '{"nonce":"AAAA","ciphertext":"BBBB"}',
        "x" * 10240,
    ],
)
def test_event_data_is_the_string_unchanged(data: str) -> None:
    frame = decode(messages.event("my-event", "my-channel", data))
    assert frame == {"event": "my-event", "channel": "my-channel", "data": data}
    assert isinstance(frame["data"], str)


def test_event_frame_key_order_and_compact_json() -> None:
    payload = unframe(messages.event("my-event", "my-channel", '{"a":1}'))
    assert payload == b'{"event":"my-event","channel":"my-channel","data":"{\\"a\\":1}"}'


@pytest.mark.parametrize("size", [0, 100, 125, 126, 1000, 65535, 65536, 200_000])
def test_frame_length_encoding(size: int) -> None:
    # 7-bit, 16-bit and 64-bit payload lengths all decode to the same event.
    data = "y" * size
    assert decode(messages.event("e", "c", data))["data"] == data


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (4001, "App key wrong-key does not exist."),
        (4201, "Pong reply not received"),
        (4301, "Client event rejected due to rate limit"),
        (None, "Invalid JSON"),
    ],
)
def test_error_data_is_an_object_with_code_and_message(code: int | None, message: str) -> None:
    frame = decode(messages.error(code, message))
    assert frame == {"event": "pusher:error", "data": {"code": code, "message": message}}


def test_error_null_code_is_json_null() -> None:
    assert b'"code":null' in unframe(messages.error(None, "x"))


def test_subscription_error_shape() -> None:
    frame = decode(
        messages.subscription_error("private-foobar", "AuthError", "Invalid signature", 401)
    )
    assert frame == {
        "event": "pusher:subscription_error",
        "channel": "private-foobar",
        "data": {"type": "AuthError", "error": "Invalid signature", "status": 401},
    }
    assert isinstance(frame["data"], dict)  # an object, not a string (docs/protocol.md §10)


def test_subscription_succeeded_default_data_is_the_string_braces() -> None:
    frame = decode(messages.subscription_succeeded("my-channel"))
    assert frame == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": "my-channel",
        "data": "{}",
    }


def test_subscription_succeeded_presence_data_is_passed_as_string() -> None:
    presence = '{"presence":{"ids":["alice"],"hash":{"alice":null},"count":1}}'
    frame = decode(messages.subscription_succeeded("presence-room", presence))
    assert frame["data"] == presence


def test_cache_miss_has_no_data() -> None:
    frame = decode(messages.cache_miss("cache-prices"))
    assert frame == {"event": "pusher:cache_miss", "channel": "cache-prices"}
    assert "data" not in frame


@pytest.mark.parametrize(("frame", "name"), [(messages.PING, "ping"), (messages.PONG, "pong")])
def test_ping_and_pong_data_is_an_empty_object(frame: bytes, name: str) -> None:
    assert decode(frame) == {"event": f"pusher:{name}", "data": {}}


def test_non_ascii_is_sent_as_utf8() -> None:
    payload = unframe(messages.event("e", "c", "Zoë 💥"))
    assert json.loads(payload.decode("utf-8"))["data"] == "Zoë 💥"


def test_json_string_is_compact() -> None:
    assert messages.json_string({"a": 1, "b": [1, 2]}) == '{"a":1,"b":[1,2]}'


# --- client -> server -----------------------------------------------------------------------

SUBSCRIBE_PUBLIC = b'{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}'
SUBSCRIBE_PRESENCE = (
    b'{"event":"pusher:subscribe","data":{"auth":"278d425bdf160c739803:31935e7d86dba64c2a90aed31'
    b'fdc61869f9b22ba9d8863bba239c03ca481bc80","channel_data":"{\\"user_id\\":10,\\"user_info\\":'
    b'{\\"name\\":\\"Mr. Channels\\"}}","channel":"presence-foobar"}}'
)


def test_parse_subscribe_frame_from_pusher_js() -> None:
    message = messages.parse_client_frame(SUBSCRIBE_PUBLIC)
    assert message.event == "pusher:subscribe"
    assert message.channel is None
    assert message.data == {"auth": "", "channel": "my-channel"}
    assert messages.protocol_data(message) == {"auth": "", "channel": "my-channel"}


def test_parse_presence_subscribe_keeps_channel_data_string() -> None:
    data = messages.protocol_data(messages.parse_client_frame(SUBSCRIBE_PRESENCE))
    assert data["channel"] == "presence-foobar"
    assert data["channel_data"] == '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'


def test_parse_accepts_str_payload() -> None:
    message = messages.parse_client_frame(SUBSCRIBE_PUBLIC.decode())
    assert message.event == "pusher:subscribe"


def test_parse_client_event_keeps_channel_and_data() -> None:
    message = messages.parse_client_frame(
        '{"event":"client-typing","channel":"private-chat","data":{"user":"alice"}}'
    )
    assert (message.event, message.channel, message.data) == (
        "client-typing",
        "private-chat",
        {"user": "alice"},
    )


def test_parse_client_event_string_data_stays_a_string() -> None:
    message = messages.parse_client_frame(
        '{"event":"client-x","channel":"private-chat","data":"{\\"a\\":1}"}'
    )
    assert message.data == '{"a":1}'


def test_parse_ping_frame() -> None:
    message = messages.parse_client_frame(b'{"event":"pusher:ping","data":{}}')
    assert message.event == "pusher:ping"
    assert messages.protocol_data(message) == {}


def test_parse_frame_without_data() -> None:
    message = messages.parse_client_frame(b'{"event":"pusher:ping"}')
    assert message.data is None
    assert messages.protocol_data(message) == {}


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"not json", b'{"event":"pusher:ping",}', b"\xff\xfe", b'{"event":"x"} trailing'],
)
def test_invalid_json_is_a_bad_message(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        messages.parse_client_frame(payload)


@pytest.mark.parametrize("payload", [b"[]", b'["pusher:ping"]', b'"pusher:ping"', b"1", b"null"])
def test_non_object_is_a_bad_message(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        messages.parse_client_frame(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"{}",
        b'{"data":{}}',
        b'{"event":null}',
        b'{"event":""}',
        b'{"event":1}',
        b'{"event":{"name":"x"}}',
    ],
)
def test_missing_or_non_string_event_is_a_bad_message(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        messages.parse_client_frame(payload)


@pytest.mark.parametrize("channel", [b"1", b"[]", b"{}", b"true"])
def test_non_string_channel_is_a_bad_message(channel: bytes) -> None:
    with pytest.raises(BadMessage):
        messages.parse_client_frame(b'{"event":"client-x","channel":' + channel + b',"data":{}}')


def test_protocol_data_decodes_a_json_string() -> None:
    # Some third-party clients send data JSON-encoded; both forms mean the same
    # (docs/protocol.md §3).
    as_object = messages.parse_client_frame(
        b'{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}'
    )
    as_string = messages.parse_client_frame(
        b'{"event":"pusher:subscribe","data":"{\\"auth\\":\\"\\",\\"channel\\":\\"my-channel\\"}"}'
    )
    assert isinstance(as_string.data, str)
    assert messages.protocol_data(as_string) == messages.protocol_data(as_object)
    assert messages.protocol_data(as_string) == {"auth": "", "channel": "my-channel"}


@pytest.mark.parametrize(
    "data",
    [b'"not json"', b'"[1,2]"', b'"\\"str\\""', b"[1,2]", b"5", b"true", b'"{"'],
)
def test_protocol_data_must_be_an_object(data: bytes) -> None:
    message = messages.parse_client_frame(b'{"event":"pusher:subscribe","data":' + data + b"}")
    with pytest.raises(BadMessage):
        messages.protocol_data(message)


# --- presence channel_data ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel_data", "user_id", "user_info"),
    [
        ('{"user_id":10,"user_info":{"name":"Mr. Channels"}}', "10", {"name": "Mr. Channels"}),
        ('{"user_id": 10, "user_info": {"name": "Mr. Channels"}}', "10", {"name": "Mr. Channels"}),
        ('{"user_id":"alice","user_info":{"name":"Alice"}}', "alice", {"name": "Alice"}),
        ('{"user_id":0}', "0", None),
        ('{"user_id":"bob"}', "bob", None),
        ('{"user_id":"bob","user_info":null}', "bob", None),
        ('{"user_id":"bob","user_info":"text"}', "bob", "text"),
        ('{"user_id":"zo\\u00eb","user_info":[1,2]}', "zoë", [1, 2]),
    ],
)
def test_parse_channel_data(channel_data: str, user_id: str, user_info: Any) -> None:
    parsed = messages.parse_channel_data(channel_data)
    assert parsed == (user_id, user_info)
    assert isinstance(parsed[0], str)


@pytest.mark.parametrize(
    "channel_data",
    [
        '{"user_info":{"name":"Alice"}}',
        "{}",
        '{"user_id":null}',
        '{"user_id":""}',
        '{"user_id":true}',
        '{"user_id":{"id":1}}',
        '{"user_id":[1]}',
        "[]",
        '"alice"',
        "not json",
        "",
    ],
)
def test_parse_channel_data_rejects_missing_or_bad_user_id(channel_data: str) -> None:
    with pytest.raises(BadMessage):
        messages.parse_channel_data(channel_data)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_ws_text_matches_websockets_serialisation(length: int) -> None:
    # ws_text writes the frame header itself (hot path); websockets is the reference.
    from websockets.frames import Frame, Opcode

    payload = b"x" * length
    assert messages.ws_text(payload) == Frame(Opcode.TEXT, payload).serialize(
        mask=False, extensions=[]
    )
