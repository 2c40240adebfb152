"""Client JSON nested too deeply is a decode error on every path, never a RecursionError."""

from __future__ import annotations

import json

import msgspec
import pytest

from clarion.protocol import api, messages
from clarion.protocol.errors import ApiError, BadMessage

LIMIT = messages.MAX_JSON_DEPTH


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [1, LIMIT - 1, LIMIT])
def test_up_to_the_limit_decodes(depth: int) -> None:
    assert messages.decode_json(nested(depth)) is not None
    assert messages.decode_json(nested_objects(depth).encode()) is not None


@pytest.mark.parametrize("depth", [LIMIT + 1, 999, 1_000, 100_000])
def test_past_the_limit_is_a_decode_error(depth: int) -> None:
    with pytest.raises(msgspec.DecodeError, match="nested deeper"):
        messages.decode_json(nested(depth))
    with pytest.raises(msgspec.DecodeError, match="nested deeper"):
        messages.decode_json(nested_objects(depth).encode())


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 5_000, "t": ["{" * 300, '\\"[[[']})
    assert messages.decode_json(text)["s"] == "[" * 5_000


def test_many_shallow_brackets_are_fine() -> None:
    text = json.dumps([[i] for i in range(5_000)])
    assert len(messages.decode_json(text)) == 5_000


def test_unbalanced_brackets_are_left_to_the_decoder() -> None:
    with pytest.raises(msgspec.DecodeError):
        messages.decode_json("[" * 200)


def test_client_frame_nested_is_bad_message() -> None:
    frame = '{"event":"client-x","channel":"private-a","data":' + nested(5_000) + "}"
    with pytest.raises(BadMessage, match="Invalid JSON"):
        messages.parse_client_frame(frame.encode())


def test_channel_data_nested_is_bad_message() -> None:
    channel_data = '{"user_id":"1","user_info":' + nested(2_000) + "}"
    with pytest.raises(BadMessage, match="channel_data"):
        messages.parse_channel_data(channel_data)


def test_protocol_data_string_nested_is_bad_message() -> None:
    message = messages.ClientMessage("pusher:subscribe", None, nested(3_000))
    with pytest.raises(BadMessage):
        messages.protocol_data(message)


def test_user_data_nested_is_bad_message() -> None:
    with pytest.raises(BadMessage, match="user_data"):
        messages.parse_user_data('{"id":"1","user_info":' + nested(1_500) + "}")


@pytest.mark.parametrize("depth", [LIMIT + 1, 1_000, 50_000])
def test_http_publish_nested_is_400(depth: int) -> None:
    body = '{"name":"e","channel":"c","data":' + nested(depth) + "}"
    with pytest.raises(ApiError) as raised:
        api.parse_publish(body.encode())
    assert raised.value.status == 400
    assert "nested deeper" in str(raised.value)


@pytest.mark.parametrize("depth", [LIMIT + 1, 1_000, 50_000])
def test_http_batch_nested_is_400(depth: int) -> None:
    body = '{"batch":[{"name":"e","channel":"c","data":' + nested(depth) + "}]}"
    with pytest.raises(ApiError) as raised:
        api.parse_batch(body.encode())
    assert raised.value.status == 400


def test_nested_data_at_the_limit_still_encodes_from_a_deep_stack() -> None:
    value = messages.decode_json(nested(LIMIT))

    def deep(levels: int) -> bytes:
        return messages.encode_json(value) if levels == 0 else deep(levels - 1)

    assert deep(800) == nested(LIMIT).encode()
