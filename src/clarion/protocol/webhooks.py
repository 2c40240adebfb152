"""Webhook shapes: event objects, the ``{time_ms, events}`` envelope and its signature.

Event names and fields follow docs/protocol.md §40; ``user_online``/``user_offline`` are a
Clarion extension (a signed-in user's first socket arrives / last socket leaves).
"""

from __future__ import annotations

from typing import Any

import msgspec

from clarion.protocol.signing import sign

EVENT_TYPES = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
        "user_online",
        "user_offline",
    }
)

# A held event (key) is cancelled by its opposite arriving within the delay.
HELD_UNTIL_CANCELLED = {
    "channel_vacated": "channel_occupied",
    "member_removed": "member_added",
    "user_offline": "user_online",
}
CANCELS = {arrival: held for held, arrival in HELD_UNTIL_CANCELLED.items()}

CONTENT_TYPE = "application/json"
MAX_EVENTS_PER_REQUEST = 100

WebhookEvent = dict[str, Any]


def channel_event(name: str, channel: str) -> WebhookEvent:
    return {"name": name, "channel": channel}


def member_event(name: str, channel: str, user_id: str) -> WebhookEvent:
    return {"name": name, "channel": channel, "user_id": user_id}


def user_event(name: str, user_id: str) -> WebhookEvent:
    return {"name": name, "user_id": user_id}


def client_event(
    channel: str, event: str, data: Any, socket_id: str, user_id: str | None
) -> WebhookEvent:
    """``data`` is always a string: as received, or the compact JSON of what was received."""
    text = data if isinstance(data, str) else msgspec.json.encode(data).decode()
    payload: WebhookEvent = {
        "name": "client_event",
        "channel": channel,
        "event": event,
        "data": text,
        "socket_id": socket_id,
    }
    if user_id is not None:
        payload["user_id"] = user_id
    return payload


def subscription_count(channel: str, count: int) -> WebhookEvent:
    return {"name": "subscription_count", "channel": channel, "subscription_count": count}


def envelope(time_ms: int, events: list[WebhookEvent]) -> bytes:
    return msgspec.json.encode({"time_ms": time_ms, "events": events})


def headers(key: str, secret: str, body: bytes, extra: dict[str, str]) -> dict[str, str]:
    """Request headers; the three Pusher ones always win over configured extras."""
    result = {k: v for k, v in extra.items() if k.lower() not in _RESERVED}
    result["Content-Type"] = CONTENT_TYPE
    result["X-Pusher-Key"] = key
    result["X-Pusher-Signature"] = sign(secret, body)
    return result


_RESERVED = {"content-type", "x-pusher-key", "x-pusher-signature", "content-length"}
