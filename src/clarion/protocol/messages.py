"""Client frames in, server frames out.

Server frames are built as complete WebSocket text frames (header included), so a
frame meant for many subscribers is encoded exactly once and the same bytes are
written to each of them. ``data`` of event frames is a JSON *string* (docs/protocol.md §3);
``pusher:error`` and ``pusher:ping``/``pusher:pong`` carry objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from clarion.protocol.errors import BadMessage

_encode = msgspec.json.Encoder().encode
_msgspec_decode = msgspec.json.Decoder().decode

# JSON from a client may nest at most this deep. msgspec itself gives up only near the
# interpreter's recursion limit (about 1,000 levels), and a value it decoded just below
# that limit can no longer be encoded again from deeper in the stack (a presence
# member's user_info, a client event's size check), so the limit is set far below it:
# no real payload nests 64 levels.
MAX_JSON_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")


class TooDeep(ValueError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH`."""


def check_depth(raw: bytes | str) -> None:
    """Raise :class:`TooDeep` when ``raw`` nests deeper than :data:`MAX_JSON_DEPTH`.

    Almost every payload has fewer brackets than the limit, which two C-speed counts
    prove; only the others are scanned, one nesting level per regex pass.
    """
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= MAX_JSON_DEPTH:
            return
        data = raw.encode("utf-8", "surrogatepass")
    elif raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    else:
        data = raw
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", data))
    for _ in range(MAX_JSON_DEPTH):
        inner = _INNERMOST.sub(b"", brackets)
        if len(inner) == len(brackets):
            return  # nothing left to peel (or unbalanced: the decoder says so)
        brackets = inner
    if brackets:
        raise TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def decode_json(raw: bytes | str) -> Any:
    """Decode client JSON; raise ``msgspec.DecodeError`` for anything unusable, including
    nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        check_depth(raw)
        return _msgspec_decode(raw)
    except (TooDeep, RecursionError) as exc:
        raise msgspec.DecodeError(str(exc) or "JSON nested too deeply") from None


_decode = decode_json


def ws_text(payload: bytes) -> bytes:
    """Wrap a JSON payload in an unmasked WebSocket text frame (server to client).

    Written out here because it runs once per published event and needs none of the
    generality of ``websockets.frames.Frame.serialize`` (masking, extensions), which
    the unit tests use as the reference for these bytes.
    """
    length = len(payload)
    if length < 126:
        return b"\x81%c%s" % (length, payload)
    if length < 65536:
        return b"\x81\x7e%s%s" % (length.to_bytes(2, "big"), payload)
    return b"\x81\x7f%s%s" % (length.to_bytes(8, "big"), payload)


def encode_json(value: Any) -> bytes:
    return _encode(value)


def json_string(value: Any) -> str:
    """Compact JSON text of ``value``, for the string-in-string ``data`` of event frames."""
    return _encode(value).decode()


# --- server -> client -------------------------------------------------------------


_ESTABLISHED = (
    b'{"event":"pusher:connection_established","data":'
    b'"{\\"socket_id\\":\\"%s\\",\\"activity_timeout\\":%d}"}'
)


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    if socket_id.replace(".", "", 1).isdigit() and type(activity_timeout) is int:
        # Once per connection: a socket id the server made ("123.456") needs no
        # escaping, so the frame is written out rather than encoded twice.
        return ws_text(_ESTABLISHED % (socket_id.encode(), activity_timeout))
    data = json_string({"socket_id": socket_id, "activity_timeout": activity_timeout})
    return ws_text(_encode({"event": "pusher:connection_established", "data": data}))


def error(code: int | None, message: str) -> bytes:
    return ws_text(_encode({"event": "pusher:error", "data": {"code": code, "message": message}}))


PING = ws_text(b'{"event":"pusher:ping","data":{}}')
PONG = ws_text(b'{"event":"pusher:pong","data":{}}')


def event(name: str, channel: str, data: str) -> bytes:
    """An event frame as every subscriber of ``channel`` receives it (docs/protocol.md §11)."""
    return ws_text(_encode({"event": name, "channel": channel, "data": data}))


_SUCCEEDED: dict[str, bytes] = {}


def subscription_succeeded(channel: str, data: str = "{}") -> bytes:
    if data == "{}":
        # The same few channels are subscribed to over and over: build their frame once.
        frame = _SUCCEEDED.get(channel)
        if frame is None:
            if len(_SUCCEEDED) > 10_000:
                _SUCCEEDED.clear()
            frame = _SUCCEEDED[channel] = _subscription_succeeded(channel, data)
        return frame
    return _subscription_succeeded(channel, data)


def _subscription_succeeded(channel: str, data: str) -> bytes:
    payload = {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}
    return ws_text(_encode(payload))


def subscription_error(channel: str, type_: str, message: str, status: int) -> bytes:
    data = {"type": type_, "error": message, "status": status}
    return ws_text(
        _encode({"event": "pusher:subscription_error", "channel": channel, "data": data})
    )


def cache_miss(channel: str) -> bytes:
    return ws_text(_encode({"event": "pusher:cache_miss", "channel": channel}))


def presence_data(members: dict[str, Any]) -> str:
    """The ``data`` string of a presence ``subscription_succeeded`` (docs/protocol.md §8).

    ``hash`` holds every member, the subscriber included; ``count`` is distinct users.
    """
    return json_string({"presence": {"ids": list(members), "hash": members, "count": len(members)}})


def signin_success(user_data: str) -> bytes:
    """``data`` decodes to an object whose ``user_data`` is the original string
    (docs/protocol.md §13)."""
    data = json_string({"user_data": user_data})
    return ws_text(_encode({"event": "pusher:signin_success", "data": data}))


def watchlist_events(entries: list[tuple[str, list[str]]]) -> bytes:
    """``online``/``offline`` entries; empty ones are left out (docs/protocol.md §14)."""
    events = [{"name": name, "user_ids": ids} for name, ids in entries if ids]
    data = json_string({"events": events})
    return ws_text(_encode({"event": "pusher_internal:watchlist_events", "data": data}))


def subscription_count(channel: str, count: int) -> bytes:
    data = json_string({"subscription_count": count})
    return ws_text(
        _encode({"event": "pusher_internal:subscription_count", "channel": channel, "data": data})
    )


def client_event(name: str, channel: str, data: Any, user_id: str | None) -> bytes:
    """A client event as the other subscribers get it: ``data`` as received
    (docs/protocol.md §12)."""
    frame: dict[str, Any] = {"event": name, "channel": channel, "data": data}
    if user_id is not None:
        frame["user_id"] = user_id
    return ws_text(_encode(frame))


# --- client -> server -------------------------------------------------------------


@dataclass(slots=True)
class ClientMessage:
    """One decoded client frame. ``data`` is as received (object, string, ...)."""

    event: str
    channel: str | None
    data: Any


def parse_client_frame(payload: bytes | str) -> ClientMessage:
    """Decode a client text frame; raise :class:`BadMessage` when it is unusable."""
    try:
        if isinstance(payload, str):
            brackets = payload.count("[") + payload.count("{")
        else:
            brackets = payload.count(b"[") + payload.count(b"{")
        # check_depth's own first test, spared a call once per message: almost every
        # frame has fewer brackets than the limit; the others go through decode_json.
        obj = _msgspec_decode(payload) if brackets <= MAX_JSON_DEPTH else _decode(payload)
    except msgspec.DecodeError as exc:
        raise BadMessage(f"Invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadMessage("A message must be a JSON object")
    name = obj.get("event")
    if not isinstance(name, str) or not name:
        raise BadMessage("Missing parameter: event")
    channel = obj.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise BadMessage("Parameter channel must be a string")
    return ClientMessage(name, channel, obj.get("data"))


def protocol_data(message: ClientMessage) -> dict[str, Any]:
    """The ``data`` object of a ``pusher:*`` event; a JSON string is decoded too
    (docs/protocol.md §3)."""
    data = message.data
    if isinstance(data, str):
        try:
            data = _decode(data)
        except msgspec.DecodeError:
            raise BadMessage(f"Invalid JSON in data of {message.event}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadMessage(f"The data of {message.event} must be an object")
    return data


def parse_channel_data(channel_data: str) -> tuple[str, Any]:
    """``(user_id, user_info)`` of presence ``channel_data``; the id is normalised to a string."""
    try:
        obj = _decode(channel_data)
    except msgspec.DecodeError:
        raise BadMessage("channel_data is not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadMessage("channel_data must be a JSON object")
    user_id = obj.get("user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise BadMessage("channel_data must contain a user_id (string or integer)")
    return str(user_id), obj.get("user_info")


@dataclass(frozen=True, slots=True)
class SignedInUser:
    id: str
    user_info: Any
    watchlist: list[str]


MAX_WATCHLIST = 100


def parse_user_data(user_data: str) -> SignedInUser:
    """The signed ``user_data`` of ``pusher:signin``: an object with a non-empty string id."""
    try:
        obj = _decode(user_data)
    except msgspec.DecodeError:
        raise BadMessage("user_data is not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadMessage("user_data must be a JSON object")
    user_id = obj.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise BadMessage("user_data must contain a non-empty string id")
    watchlist = obj.get("watchlist") or []
    if not isinstance(watchlist, list) or not all(isinstance(u, str) for u in watchlist):
        raise BadMessage("watchlist must be an array of user id strings")
    if len(watchlist) > MAX_WATCHLIST:
        raise BadMessage(f"watchlist is longer than {MAX_WATCHLIST} user ids")
    return SignedInUser(user_id, obj.get("user_info"), list(dict.fromkeys(watchlist)))
