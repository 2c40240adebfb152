"""HTTP API request bodies and query attributes: decoding, validation and limits.

Each ``parse_*`` function turns raw bytes or query values into a typed request or
raises :class:`ApiError` with the status given in docs/protocol.md §23-§30.
"""

from __future__ import annotations

from typing import Any

import msgspec

from clarion.protocol import names
from clarion.protocol.errors import ApiError
from clarion.protocol.messages import MAX_JSON_DEPTH, TooDeep, check_depth


class _EventBody(msgspec.Struct):
    name: Any = None
    data: Any = None
    channels: Any = None
    channel: Any = None
    socket_id: Any = None
    info: Any = None


class _BatchBody(msgspec.Struct):
    batch: Any = None


_decode_event = msgspec.json.Decoder(_EventBody).decode
_decode_batch = msgspec.json.Decoder(_BatchBody).decode


class PublishRequest(msgspec.Struct, frozen=True):
    """One event to publish (a Struct: built in C, one per HTTP publish)."""

    name: str
    channels: list[str]
    data: str
    socket_id: str | None
    info: frozenset[str]


PUBLISH_INFO = frozenset({"user_count", "subscription_count"})
_NO_INFO: frozenset[str] = frozenset()
CHANNEL_INFO = frozenset({"user_count", "subscription_count", "cache"})
CHANNELS_INFO = frozenset({"user_count", "subscription_count"})


def parse_info(raw: object, allowed: frozenset[str]) -> frozenset[str]:
    if raw is None or raw == "":
        return frozenset()
    if not isinstance(raw, str):
        raise ApiError(400, "info must be a comma-separated string")
    attributes = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = attributes - allowed
    if unknown:
        raise ApiError(
            400,
            f"Unsupported info attribute(s): {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}",
        )
    return attributes


def _event(body: _EventBody, where: str, limits: names.EventLimits) -> PublishRequest:
    name_error = names.event_name_error(body.name, limits.max_event_name_length)
    if name_error:
        raise ApiError(400, where + name_error)
    if body.channels is not None:
        channels = body.channels
        if not isinstance(channels, list) or not channels:
            raise ApiError(400, where + "channels must be a non-empty array of channel names")
    elif body.channel is not None:
        channels = [body.channel]
    else:
        raise ApiError(400, where + "Missing channels (or channel)")
    if len(channels) > limits.max_event_channels:
        raise ApiError(
            400, where + f"Too many channels: {len(channels)} > {limits.max_event_channels}"
        )
    for channel in channels:
        channel_error = names.channel_name_error(channel, limits.max_channel_name_length)
        if channel_error:
            raise ApiError(400, where + channel_error)
    if body.data is None:
        raise ApiError(400, where + "Missing data")
    # SDKs always send a string; anything else (hand-written requests) is JSON-encoded.
    data = body.data if isinstance(body.data, str) else msgspec.json.encode(body.data).decode()
    # A character is at most 4 bytes in UTF-8: short strings need no encoding to measure.
    most = limits.max_event_payload_bytes
    if len(data) * 4 > most and len(data.encode()) > most:
        raise ApiError(
            413,
            where + f"The data content of this event exceeds the allowed maximum ({most} bytes)",
        )
    if body.socket_id is not None and not names.is_valid_socket_id(body.socket_id):
        raise ApiError(400, where + f"Invalid socket_id {body.socket_id!r}: expected digits.digits")
    info = _NO_INFO if body.info is None else parse_info(body.info, PUBLISH_INFO)
    return PublishRequest(body.name, list(dict.fromkeys(channels)), data, body.socket_id, info)


def parse_publish(raw: bytes, limits: names.EventLimits = names.DEFAULT_LIMITS) -> PublishRequest:
    try:
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
            check_depth(raw)  # (its own first test, spared a call on the publish path)
        body = _decode_event(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, TooDeep, RecursionError) as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    return _event(body, "", limits)


def parse_batch(
    raw: bytes, limits: names.EventLimits = names.DEFAULT_LIMITS
) -> list[PublishRequest]:
    """A batch is validated whole before anything is published (docs/protocol.md §25)."""
    try:
        check_depth(raw)
        body = _decode_batch(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, TooDeep, RecursionError) as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    items = body.batch
    if not isinstance(items, list) or not items:
        raise ApiError(400, "batch must be a non-empty array of events")
    if len(items) > limits.max_batch_size:
        raise ApiError(400, f"Too many events in batch: {len(items)} > {limits.max_batch_size}")
    requests: list[PublishRequest] = []
    errors: list[ApiError] = []
    for index, item in enumerate(items):
        where = f"batch[{index}]: "
        if not isinstance(item, dict):
            raise ApiError(400, where + "each event must be an object")
        try:
            requests.append(_event(msgspec.convert(item, _EventBody), where, limits))
        except ApiError as exc:
            errors.append(exc)
        except msgspec.ValidationError as exc:
            errors.append(ApiError(400, where + str(exc)))
    if errors:
        # An oversized item makes the whole request 413; otherwise the first error is reported.
        too_large = [e for e in errors if e.status == 413]
        raise too_large[0] if too_large else errors[0]
    return requests


def parse_channels_query(params: dict[str, str]) -> tuple[str, frozenset[str]]:
    """``filter_by_prefix`` and ``info`` of GET /channels (user_count needs presence-)."""
    prefix = params.get("filter_by_prefix", "")
    info = parse_info(params.get("info"), CHANNELS_INFO)
    if "user_count" in info and not prefix.startswith("presence-"):
        raise ApiError(400, "info=user_count requires filter_by_prefix to start with presence-")
    return prefix, info


def channels_reply(
    names: list[str], subscription_counts: list[str] | None, user_counts: list[str] | None
) -> bytes:
    """The body of GET /channels: ``{"channels": {name: {counts asked for}}}``.

    Counts come as decimal text (as Redis holds them). The body is spliced from the
    columns by list slicing and one join, with no Python-level step per channel: that
    keeps a listing of 10,000 channels around a millisecond. Channel names are validated
    at subscribe and never need JSON escaping; the check below keeps that an assertion
    and falls back to the encoder if it ever fails.
    """
    if not names:
        return b'{"channels":{}}'
    joined = "".join(names)
    if '"' in joined or "\\" in joined or not joined.isprintable():
        return _channels_reply_encoded(names, subscription_counts, user_counts)
    # Each entry is: name, separator, [count, separator]...; the last separator of an
    # entry closes it and opens the next name's quote.
    counted = [
        (key, column)
        for key, column in (
            ("user_count", user_counts),
            ("subscription_count", subscription_counts),
        )
        if column is not None
    ]
    columns = [names, *(column for _, column in counted)]
    separators = ['":{'] if counted else ['":{},"']
    for position, (key, _) in enumerate(counted):
        separators[-1] += f'"{key}":'
        separators.append("," if position + 1 < len(counted) else '},"')
    width = 2 * len(columns)
    parts: list[str] = [s for separator in separators for s in ("", separator)] * len(names)
    for index, column in enumerate(columns):
        parts[2 * index :: width] = column
    parts[-1] = parts[-1][:-2]  # no next name after the last entry
    return ('{"channels":{"' + "".join(parts) + "}}").encode()


def _channels_reply_encoded(
    names: list[str], subscription_counts: list[str] | None, user_counts: list[str] | None
) -> bytes:
    channels: dict[str, dict[str, int]] = {}
    for index, name in enumerate(names):
        entry = channels[name] = {}
        if user_counts is not None:
            entry["user_count"] = int(user_counts[index])
        if subscription_counts is not None:
            entry["subscription_count"] = int(subscription_counts[index])
    return msgspec.json.encode({"channels": channels})


def parse_channel_query(
    channel: str, params: dict[str, str], max_length: int = names.MAX_CHANNEL_NAME_HTTP
) -> frozenset[str]:
    channel_error = names.channel_name_error(channel, max_length)
    if channel_error:
        raise ApiError(400, channel_error)
    info = parse_info(params.get("info"), CHANNEL_INFO)
    if "user_count" in info and names.channel_kind(channel) is not names.ChannelKind.PRESENCE:
        raise ApiError(400, "info=user_count is only available for presence channels")
    return info


def check_users_channel(channel: str, max_length: int = names.MAX_CHANNEL_NAME_HTTP) -> None:
    channel_error = names.channel_name_error(channel, max_length)
    if channel_error:
        raise ApiError(400, channel_error)
    if names.channel_kind(channel) is not names.ChannelKind.PRESENCE:
        raise ApiError(400, "Users can only be listed for presence channels")


def error_body(status: int, message: str) -> bytes:
    return msgspec.json.encode({"error": message, "code": status})
