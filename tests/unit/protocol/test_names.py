"""Channel kinds, cache channels, channel and event name rules, socket ids.

docs/protocol.md §4, §6, §24 and §30.
"""

from __future__ import annotations

import pytest

from clarion.protocol import names
from clarion.protocol.names import ChannelKind

# --- channel kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("private-encrypted-secret", ChannelKind.ENCRYPTED),
        ("private-encrypted-cache-prices", ChannelKind.ENCRYPTED),
        ("private-encrypted-", ChannelKind.ENCRYPTED),
        ("private-chat", ChannelKind.PRIVATE),
        ("private-cache-prices", ChannelKind.PRIVATE),
        ("private-encrypte", ChannelKind.PRIVATE),
        ("private-encryptedx", ChannelKind.PRIVATE),
        ("presence-room", ChannelKind.PRESENCE),
        ("presence-cache-room", ChannelKind.PRESENCE),
        ("presence-private-x", ChannelKind.PRESENCE),
        ("#server-to-user-user-42", ChannelKind.SERVER_TO_USER),
        ("#server-to-user-user 42 é", ChannelKind.SERVER_TO_USER),
        ("cache-prices", ChannelKind.PUBLIC),
        ("my-channel", ChannelKind.PUBLIC),
        ("private", ChannelKind.PUBLIC),
        ("presence", ChannelKind.PUBLIC),
        ("privatechat", ChannelKind.PUBLIC),
        ("Private-chat", ChannelKind.PUBLIC),
        ("my-private-chat", ChannelKind.PUBLIC),
        ("server-to-user-x", ChannelKind.PUBLIC),
    ],
)
def test_channel_kind_by_prefix(name: str, kind: ChannelKind) -> None:
    assert names.channel_kind(name) is kind


@pytest.mark.parametrize(
    "name",
    ["cache-prices", "private-cache-prices", "presence-cache-room", "private-encrypted-cache-x"],
)
def test_the_four_cache_prefixes(name: str) -> None:
    assert names.is_cache_channel(name)


@pytest.mark.parametrize(
    "name",
    [
        "cache",
        "cachex",
        "my-cache-prices",
        "private-cachex",
        "private-chat",
        "presence-room",
        "private-encrypted-secret",
        "private-encrypted-cachex",
        "encrypted-cache-x",
        "Cache-prices",
        "#server-to-user-cache-x",
    ],
)
def test_not_cache_channels(name: str) -> None:
    assert not names.is_cache_channel(name)


# --- channel names --------------------------------------------------------------------------

SUBSCRIBE, HTTP = 164, 200


def test_limits_are_the_specs() -> None:
    assert names.MAX_CHANNEL_NAME_SUBSCRIBE == SUBSCRIBE
    assert names.MAX_CHANNEL_NAME_HTTP == HTTP
    assert names.MAX_EVENT_NAME == 200
    assert names.MAX_EVENT_DATA_BYTES == 10240
    assert names.MAX_CHANNELS_PER_PUBLISH == 100
    assert names.MAX_BATCH_EVENTS == 10


@pytest.mark.parametrize(
    "name",
    [
        "my-channel",
        "a",
        "ABCXYZabcxyz0123456789",
        "_-=@,.;",
        "private-encrypted-cache-x",
        "presence-room=1@host,a.b;c",
        "-",
        ";",
    ],
)
@pytest.mark.parametrize("limit", [SUBSCRIBE, HTTP])
def test_valid_channel_names(name: str, limit: int) -> None:
    assert names.channel_name_error(name, limit) is None


@pytest.mark.parametrize("char", list(" #/:!?*+%&$'\"<>[]{}()|\\^~`\t\n\r\x00éü日💥"))
def test_characters_outside_the_set_are_refused(char: str) -> None:
    for name in (f"my{char}channel", f"{char}channel", f"channel{char}"):
        assert names.channel_name_error(name, HTTP) is not None, repr(name)


@pytest.mark.parametrize("name", ["", None, 5, ["my-channel"], b"my-channel"])
def test_empty_or_non_string_names_are_refused(name: object) -> None:
    assert names.channel_name_error(name, HTTP) is not None


def test_trailing_newline_is_refused() -> None:
    assert names.channel_name_error("my-channel\n", HTTP) is not None


def test_length_limit_for_subscribe_is_164() -> None:
    assert names.channel_name_error("a" * 164, SUBSCRIBE) is None
    assert names.channel_name_error("a" * 165, SUBSCRIBE) is not None
    assert names.channel_name_error("presence-" + "a" * 155, SUBSCRIBE) is None
    assert names.channel_name_error("presence-" + "a" * 156, SUBSCRIBE) is not None


def test_length_limit_for_http_is_200() -> None:
    assert names.channel_name_error("a" * 165, HTTP) is None
    assert names.channel_name_error("a" * 200, HTTP) is None
    assert names.channel_name_error("a" * 201, HTTP) is not None


@pytest.mark.parametrize(
    "user_id",
    ["user-42", "user 42", "zoë", "💥", "a/b", "a:b", "a#b", "x" * 100, '{"id":1}'],
)
def test_server_to_user_accepts_any_id_without_control_characters(user_id: str) -> None:
    # The Node SDK's sendToUser builds #server-to-user-{id} for any non-empty id.
    assert names.channel_name_error("#server-to-user-" + user_id, HTTP) is None


@pytest.mark.parametrize("user_id", ["", "a\nb", "a\x00", "\x1f", "tab\there", "del\x7f", "\r"])
def test_server_to_user_refuses_empty_id_or_control_characters(user_id: str) -> None:
    assert names.channel_name_error("#server-to-user-" + user_id, HTTP) is not None


def test_server_to_user_length_is_limited_too() -> None:
    prefix = "#server-to-user-"
    assert names.channel_name_error(prefix + "a" * (HTTP - len(prefix)), HTTP) is None
    assert names.channel_name_error(prefix + "a" * (HTTP - len(prefix) + 1), HTTP) is not None


@pytest.mark.parametrize(
    "name", ["#server-to-user", "#my-channel", "#", "#server-to-users-x", "server-to-user-#x"]
)
def test_other_hash_names_are_refused(name: str) -> None:
    assert names.channel_name_error(name, HTTP) is not None


# --- event names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["my-event", "client-typing", "e", "pusher", "pusherx:ev", "my:event", "Zoë 💥", "x" * 200],
)
def test_valid_event_names(name: str) -> None:
    assert names.event_name_error(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "pusher:subscribe",
        "pusher:",
        "pusher:my-event",
        "pusher_internal:subscription_succeeded",
        "pusher_internal:",
    ],
)
def test_reserved_event_names_are_refused(name: str) -> None:
    assert names.event_name_error(name) is not None


@pytest.mark.parametrize("name", ["", None, 1, ["my-event"], "x" * 201, "é" * 201])
def test_empty_too_long_or_non_string_event_names_are_refused(name: object) -> None:
    assert names.event_name_error(name) is not None


# --- socket ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["123.456", "1.2", "0.0", "123456.7890123", "00012.34", "9" * 20 + "." + "9" * 20]
)
def test_valid_socket_ids(value: str) -> None:
    assert names.is_valid_socket_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "123",
        "123.",
        ".456",
        "123.456.789",
        "-1.2",
        "1.-2",
        "+1.2",
        "a.b",
        "12a.456",
        "1,2",
        " 123.456",
        "123.456 ",
        "123.456\n",
        "\n123.456",
        "123 .456",
        # Decimal digits are ASCII: Node's validateSocketId (/^\d+\.\d+$/ in JavaScript)
        # refuses other scripts' digits, and the server only ever issues ASCII ids.
        "\u0661\u0662\u0663.\u0664\u0665\u0666",  # ARABIC-INDIC DIGITs
        "\uff11\uff12.\uff13",  # FULLWIDTH DIGITs
        None,
        123.456,
        123,
        b"123.456",
    ],
)
def test_invalid_socket_ids(value: object) -> None:
    assert not names.is_valid_socket_id(value)


# --- what GET /channels lists ---------------------------------------------------------------


def test_every_channel_is_listed_without_prefix_or_server_to_user_channels() -> None:
    assert names.listed_channels(["a", "presence-b", "private-c"], "") is None


def test_listing_leaves_out_server_to_user_channels_and_other_prefixes() -> None:
    channels = ["a", "#server-to-user-1", "presence-b", "presence-c", "#server-to-user-2"]
    assert names.listed_channels(channels, "") == [0, 2, 3]
    assert names.listed_channels(channels, "presence-") == [2, 3]
    assert names.listed_channels(channels, "#") == []
