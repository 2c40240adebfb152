"""Channel kinds, name rules, event-name rules and the protocol's size limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Limits (docs/protocol.md §19, §30).
MAX_CHANNEL_NAME_SUBSCRIBE = 164
MAX_CHANNEL_NAME_HTTP = 200
MAX_EVENT_NAME = 200
MAX_EVENT_DATA_BYTES = 10 * 1024
MAX_CHANNELS_PER_PUBLISH = 100
MAX_BATCH_EVENTS = 10
MAX_PRESENCE_MEMBERS = 100
MAX_PRESENCE_USER_ID = 128
MAX_PRESENCE_USER_INFO_BYTES = 1024

SERVER_TO_USER_PREFIX = "#server-to-user-"


@dataclass(frozen=True, slots=True)
class EventLimits:
    """One app's limits on what is published, by the HTTP API and by clients alike.

    The defaults are Pusher's; an app may set its own (``max_event_payload_kb`` and
    friends in its configuration). A subscribe keeps Pusher's 164-character cap on
    channel names unless the app's cap is lower.
    """

    max_event_payload_bytes: int = MAX_EVENT_DATA_BYTES
    max_event_name_length: int = MAX_EVENT_NAME
    max_channel_name_length: int = MAX_CHANNEL_NAME_HTTP
    max_event_channels: int = MAX_CHANNELS_PER_PUBLISH
    max_batch_size: int = MAX_BATCH_EVENTS

    @property
    def max_subscribe_channel_name(self) -> int:
        return min(MAX_CHANNEL_NAME_SUBSCRIBE, self.max_channel_name_length)


DEFAULT_LIMITS = EventLimits()

_CHANNEL_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
_SOCKET_ID_RE = re.compile(r"[0-9]+\.[0-9]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class ChannelKind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


def channel_kind(name: str) -> ChannelKind:
    """The channel's type, decided by prefix in the order of docs/protocol.md §6."""
    if name.startswith("private-encrypted-"):
        return ChannelKind.ENCRYPTED
    if name.startswith("private-"):
        return ChannelKind.PRIVATE
    if name.startswith("presence-"):
        return ChannelKind.PRESENCE
    if name.startswith(SERVER_TO_USER_PREFIX):
        return ChannelKind.SERVER_TO_USER
    return ChannelKind.PUBLIC


def listed_channels(channels: list[str], prefix: str) -> list[int] | None:
    """Which of ``channels`` GET /channels lists under ``prefix``: their indexes, or None
    when that is every one of them (the usual case, found without a loop in Python).

    Server-to-user channels are never listed; '#' cannot occur in any other name.
    """
    if not prefix and "#" not in "".join(channels):
        return None
    return [
        i
        for i, name in enumerate(channels)
        if name.startswith(prefix) and not name.startswith(SERVER_TO_USER_PREFIX)
    ]


def is_cache_channel(name: str) -> bool:
    return name.startswith(
        ("cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-")
    )


def channel_name_error(name: object, max_length: int) -> str | None:
    """Why ``name`` is not a valid channel name, or None when it is.

    ``#server-to-user-{id}`` accepts any non-empty id without control characters,
    because the Node SDK's ``sendToUser`` does not restrict the id (docs/protocol.md §6).
    """
    if not isinstance(name, str) or not name:
        return "Channel name must be a non-empty string"
    if len(name) > max_length:
        return f"Channel name is longer than {max_length} characters: {name[:40]}..."
    if name.startswith(SERVER_TO_USER_PREFIX):
        user_id = name[len(SERVER_TO_USER_PREFIX) :]
        if not user_id or _CONTROL_RE.search(user_id):
            return f"Invalid server-to-user channel name: {name!r}"
        return None
    if not _CHANNEL_RE.fullmatch(name):
        return f"Invalid channel name {name!r}: allowed characters are A-Z a-z 0-9 _ - = @ , . ;"
    return None


def event_name_error(name: object, max_length: int = MAX_EVENT_NAME) -> str | None:
    """Why ``name`` cannot be published through the HTTP API, or None."""
    if not isinstance(name, str) or not name:
        return "Event name must be a non-empty string"
    if len(name) > max_length:
        return f"Event name is longer than {max_length} characters"
    if name.startswith(("pusher:", "pusher_internal:")):
        return f"Event name {name!r} is reserved: names starting with pusher: are the protocol's"
    return None


def is_valid_socket_id(value: object) -> bool:
    return isinstance(value, str) and _SOCKET_ID_RE.fullmatch(value) is not None
