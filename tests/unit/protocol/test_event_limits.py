"""Per-app event limits in the HTTP API's validation (the defaults are Pusher's)."""

from __future__ import annotations

import json

import pytest

from clarion.protocol import api, names
from clarion.protocol.errors import ApiError

SMALL = names.EventLimits(
    max_event_payload_bytes=100,
    max_event_name_length=5,
    max_channel_name_length=8,
    max_event_channels=2,
    max_batch_size=2,
)


def body(**fields: object) -> bytes:
    return json.dumps({"name": "e", "channel": "c", "data": "x", **fields}).encode()


def refused(raw: bytes, limits: names.EventLimits, batch: bool = False) -> ApiError:
    with pytest.raises(ApiError) as raised:
        (api.parse_batch if batch else api.parse_publish)(raw, limits)
    return raised.value


def test_defaults_are_pushers() -> None:
    limits = names.DEFAULT_LIMITS
    assert limits.max_event_payload_bytes == 10 * 1024
    assert (limits.max_event_name_length, limits.max_channel_name_length) == (200, 200)
    assert (limits.max_event_channels, limits.max_batch_size) == (100, 10)
    assert limits.max_subscribe_channel_name == 164
    assert api.parse_publish(body(data="y" * 10 * 1024)).data == "y" * 10 * 1024
    assert refused(body(data="y" * (10 * 1024 + 1)), limits).status == 413


def test_payload_limit() -> None:
    assert api.parse_publish(body(data="y" * 100), SMALL).data == "y" * 100
    error = refused(body(data="y" * 101), SMALL)
    assert error.status == 413
    assert "(100 bytes)" in str(error)


def test_event_name_limit() -> None:
    assert api.parse_publish(body(name="abcde"), SMALL).name == "abcde"
    error = refused(body(name="abcdef"), SMALL)
    assert (error.status, str(error)) == (400, "Event name is longer than 5 characters")


def test_channel_name_limit() -> None:
    assert api.parse_publish(body(channel="12345678"), SMALL).channels == ["12345678"]
    assert refused(body(channel="123456789"), SMALL).status == 400
    assert SMALL.max_subscribe_channel_name == 8


def test_channels_per_event_limit() -> None:
    assert api.parse_publish(body(channel=None, channels=["a", "b"]), SMALL).channels == ["a", "b"]
    error = refused(body(channel=None, channels=["a", "b", "c"]), SMALL)
    assert (error.status, str(error)) == (400, "Too many channels: 3 > 2")


def test_batch_size_limit() -> None:
    item = {"name": "e", "channel": "c", "data": "x"}
    assert len(api.parse_batch(json.dumps({"batch": [item] * 2}).encode(), SMALL)) == 2
    error = refused(json.dumps({"batch": [item] * 3}).encode(), SMALL, batch=True)
    assert (error.status, str(error)) == (400, "Too many events in batch: 3 > 2")


def test_larger_limits_than_pushers() -> None:
    big = names.EventLimits(max_event_payload_bytes=64 * 1024, max_batch_size=50)
    assert len(api.parse_publish(body(data="z" * 60_000), big).data) == 60_000
    item = {"name": "e", "channel": "c", "data": "x"}
    assert len(api.parse_batch(json.dumps({"batch": [item] * 50}).encode(), big)) == 50
