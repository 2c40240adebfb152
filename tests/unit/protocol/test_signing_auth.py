"""Channel authorisation and user sign-in tokens (docs/protocol.md §33-§36) against the
official SDKs.

The tokens are what an app's auth endpoint returns, produced here by the Python SDK's
``authenticate``/``authenticate_user`` and the Node SDK's ``authorizeChannel``/
``authenticateUser``; the server must accept each one over the exact string the client sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import pusher
import pytest

from clarion.protocol import signing
from tests.support.sdk import APP_ID, KEY, SECRET, run_node

CREDENTIALS = signing.Credentials(KEY, SECRET)
MASTER_KEY_B64 = base64.b64encode(bytes(range(32))).decode()


@dataclass(frozen=True)
class Token:
    sdk: str
    title: str
    socket_id: str
    channel: str | None  # None for a user sign-in
    result: dict[str, Any]  # what the app's auth endpoint returns

    def signed(self) -> str:
        """The string the server signs, built with the code under test."""
        if self.channel is None:
            return signing.user_auth_string(self.socket_id, self.result["user_data"])
        return signing.channel_auth_string(
            self.socket_id, self.channel, self.result.get("channel_data")
        )

    def expected_signed(self) -> str:
        """The same string written out from docs/protocol.md §33-§36, independently of
        signing.py."""
        if self.channel is None:
            return f"{self.socket_id}::user::{self.result['user_data']}"
        if "channel_data" in self.result:
            return f"{self.socket_id}:{self.channel}:{self.result['channel_data']}"
        return f"{self.socket_id}:{self.channel}"


NODE_SCRIPT = r"""
const Pusher = require("pusher");
const p = new Pusher({ appId: "3", key: "278d425bdf160c739803", secret: "7ad3773142a6692b25b8",
  encryptionMasterKeyBase64: process.argv[process.argv.length - 1] });
const out = [];
const channel = (title, socketId, name, data) => out.push({ title, socket_id: socketId,
  channel: name, result: p.authorizeChannel(socketId, name, data) });
const user = (title, socketId, data) => out.push({ title, socket_id: socketId, channel: null,
  result: p.authenticateUser(socketId, data) });
channel("private", "1234.1234", "private-foobar");
channel("private, other socket", "98765.4321", "private-chat");
channel("encrypted", "1234.1234", "private-encrypted-secret");
channel("presence, numeric user_id", "1234.1234", "presence-foobar",
  { user_id: 10, user_info: { name: "Mr. Channels" } });
channel("presence, non-ASCII user_info", "1234.1234", "presence-room",
  { user_id: "zoë", user_info: { name: "Zoë 💥" } });
channel("presence, no channel_data", "1234.1234", "presence-room");
user("user", "1234.1234",
  { id: "user-42", user_info: { name: "Alice" }, watchlist: ["user-7", "user-8"] });
user("user, non-ASCII, id with a space", "1234.1234",
  { id: "user 42", user_info: { name: "Zoë 💥" } });
process.stdout.write(JSON.stringify(out));
"""


def python_tokens() -> list[Token]:
    client = pusher.Pusher(
        app_id=APP_ID, key=KEY, secret=SECRET, encryption_master_key_base64=MASTER_KEY_B64
    )
    out: list[Token] = []

    def channel(title: str, socket_id: str, name: str, data: Any = None) -> None:
        result = client.authenticate(name, socket_id, data)
        result.pop("shared_secret", None)  # bytes; not the server's business
        out.append(Token("python", title, socket_id, name, result))

    def user(title: str, socket_id: str, data: dict[str, Any]) -> None:
        out.append(
            Token("python", title, socket_id, None, client.authenticate_user(socket_id, data))
        )

    channel("private", "1234.1234", "private-foobar")
    channel("private, other socket", "98765.4321", "private-chat")
    channel("encrypted", "1234.1234", "private-encrypted-secret")
    channel(
        "presence, numeric user_id",
        "1234.1234",
        "presence-foobar",
        {"user_id": 10, "user_info": {"name": "Mr. Channels"}},
    )
    channel(
        "presence, non-ASCII user_info",
        "1234.1234",
        "presence-room",
        {"user_id": "zoë", "user_info": {"name": "Zoë 💥"}},
    )
    channel("presence, no channel_data", "1234.1234", "presence-room")
    user(
        "user",
        "1234.1234",
        {"id": "user-42", "user_info": {"name": "Alice"}, "watchlist": ["user-7", "user-8"]},
    )
    user("user, non-ASCII", "1234.1234", {"id": "user-42", "user_info": {"name": "Zoë 💥"}})
    return out


PYTHON_TITLES = [
    "private",
    "private, other socket",
    "encrypted",
    "presence, numeric user_id",
    "presence, non-ASCII user_info",
    "presence, no channel_data",
    "user",
    "user, non-ASCII",
]
NODE_TITLES = [
    "private",
    "private, other socket",
    "encrypted",
    "presence, numeric user_id",
    "presence, non-ASCII user_info",
    "presence, no channel_data",
    "user",
    "user, non-ASCII, id with a space",
]
ALL = [("python", t) for t in PYTHON_TITLES] + [("node", t) for t in NODE_TITLES]


@pytest.fixture(scope="module")
def python_tokens_() -> dict[str, Token]:
    tokens = python_tokens()
    assert [t.title for t in tokens] == PYTHON_TITLES
    return {t.title: t for t in tokens}


@pytest.fixture(scope="module")
def node_tokens_() -> dict[str, Token]:
    tokens = [Token("node", **item) for item in run_node(NODE_SCRIPT, MASTER_KEY_B64)]
    assert [t.title for t in tokens] == NODE_TITLES
    return {t.title: t for t in tokens}


@pytest.fixture
def tokens(request: pytest.FixtureRequest) -> dict[tuple[str, str], Token]:
    """Both SDKs' tokens, for the tests that compare them."""
    python = request.getfixturevalue("python_tokens_")
    node = request.getfixturevalue("node_tokens_")
    return {
        **{("python", title): t for title, t in python.items()},
        **{("node", title): t for title, t in node.items()},
    }


@pytest.fixture(params=ALL, ids=[f"{sdk}: {title}" for sdk, title in ALL])
def token(request: pytest.FixtureRequest) -> Token:
    sdk, title = request.param
    tokens: dict[str, Token] = request.getfixturevalue(f"{sdk}_tokens_")
    return tokens[title]


def flip_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


# --- every SDK token ----------------------------------------------------------------------


def test_sdk_token_is_accepted(token: Token) -> None:
    assert signing.check_auth_token(token.result["auth"], CREDENTIALS, token.signed()) is None


def test_auth_string_is_what_the_sdk_signed(token: Token) -> None:
    assert token.signed() == token.expected_signed()
    key, _, signature = token.result["auth"].partition(":")
    assert key == KEY
    digest = hmac.new(SECRET.encode(), token.expected_signed().encode(), hashlib.sha256)
    assert signature == digest.hexdigest()


def test_wrong_key_part_is_rejected(token: Token) -> None:
    _, _, signature = token.result["auth"].partition(":")
    for key in ("178d425bdf160c739803", "", KEY.upper(), KEY + " "):
        error = signing.check_auth_token(f"{key}:{signature}", CREDENTIALS, token.signed())
        assert error is not None


def test_wrong_signature_is_rejected(token: Token) -> None:
    key, _, signature = token.result["auth"].partition(":")
    for wrong in (flip_hex(signature), signature[:-1], signature + "0", "", signature.upper()):
        assert wrong != signature
        assert signing.check_auth_token(f"{key}:{wrong}", CREDENTIALS, token.signed()) is not None


def test_token_signed_with_another_secret_is_rejected(token: Token) -> None:
    other = signing.Credentials(KEY, "6ad3773142a6692b25b8")
    assert signing.check_auth_token(token.result["auth"], other, token.signed()) is not None


@pytest.mark.parametrize("missing", [None, "", 0, ["a"], {"auth": "x"}])
def test_missing_token_is_rejected(token: Token, missing: object) -> None:
    assert signing.check_auth_token(missing, CREDENTIALS, token.signed()) is not None


def test_token_without_colon_is_rejected(token: Token) -> None:
    _, _, signature = token.result["auth"].partition(":")
    for bare in (signature, KEY + signature, KEY):
        assert signing.check_auth_token(bare, CREDENTIALS, token.signed()) is not None


def test_token_for_another_socket_is_rejected(token: Token) -> None:
    other = "1234.1235" if token.socket_id != "1234.1235" else "1234.1236"
    if token.channel is None:
        signed = signing.user_auth_string(other, token.result["user_data"])
    else:
        signed = signing.channel_auth_string(other, token.channel, token.result.get("channel_data"))
    assert signing.check_auth_token(token.result["auth"], CREDENTIALS, signed) is not None


def test_token_for_another_channel_is_rejected(token: Token) -> None:
    if token.channel is None:
        # A sign-in token is not a channel token for the same socket either.
        signed = signing.channel_auth_string(token.socket_id, "private-foobar")
    else:
        signed = signing.channel_auth_string(
            token.socket_id, token.channel + "x", token.result.get("channel_data")
        )
    assert signing.check_auth_token(token.result["auth"], CREDENTIALS, signed) is not None


# --- presence channel_data and user_data are verified over the exact string ---------------


@pytest.mark.parametrize("title", ["presence, numeric user_id", "presence, non-ASCII user_info"])
def test_sdks_serialise_channel_data_differently_and_both_verify(
    tokens: dict[tuple[str, str], Token], title: str
) -> None:
    python, node = tokens["python", title], tokens["node", title]
    assert python.channel == node.channel
    assert python.socket_id == node.socket_id
    assert ", " in python.result["channel_data"]  # json.dumps default separators
    assert ", " not in node.result["channel_data"]  # JSON.stringify
    assert python.result["channel_data"] != node.result["channel_data"]
    for own in (python, node):
        assert signing.check_auth_token(own.result["auth"], CREDENTIALS, own.signed()) is None
    # A token never verifies over the other SDK's serialisation of the same data.
    assert signing.check_auth_token(python.result["auth"], CREDENTIALS, node.signed()) is not None
    assert signing.check_auth_token(node.result["auth"], CREDENTIALS, python.signed()) is not None


def test_presence_without_channel_data_signs_socket_and_channel(
    tokens: dict[tuple[str, str], Token],
) -> None:
    for sdk in ("python", "node"):
        token = tokens[sdk, "presence, no channel_data"]
        assert "channel_data" not in token.result
        signed = signing.channel_auth_string(token.socket_id, token.channel or "")
        assert signed == "1234.1234:presence-room"
        assert signing.check_auth_token(token.result["auth"], CREDENTIALS, signed) is None
        # Adding an (empty) channel_data part changes the string: no longer valid.
        with_data = signing.channel_auth_string(token.socket_id, token.channel or "", "")
        assert signing.check_auth_token(token.result["auth"], CREDENTIALS, with_data) is not None


def test_user_data_is_verified_over_the_exact_string(tokens: dict[tuple[str, str], Token]) -> None:
    python, node = tokens["python", "user"], tokens["node", "user"]
    assert python.result["user_data"] != node.result["user_data"]
    for own, other in ((python, node), (node, python)):
        assert signing.check_auth_token(own.result["auth"], CREDENTIALS, own.signed()) is None
        assert signing.check_auth_token(own.result["auth"], CREDENTIALS, other.signed()) is not None


# --- Pusher's documented examples (docs/protocol.md §33, §34), literal fixtures ---------------

DOCS_PRIVATE = (
    "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
)
DOCS_PRESENCE = (
    "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
)
DOCS_CHANNEL_DATA = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'


def test_docs_private_channel_example() -> None:
    signed = signing.channel_auth_string("1234.1234", "private-foobar")
    assert signed == "1234.1234:private-foobar"
    assert signing.check_auth_token(DOCS_PRIVATE, CREDENTIALS, signed) is None
    wrong = signing.channel_auth_string("1234.1234", "private-foobaz")
    assert signing.check_auth_token(DOCS_PRIVATE, CREDENTIALS, wrong) is not None


def test_docs_presence_channel_example() -> None:
    signed = signing.channel_auth_string("1234.1234", "presence-foobar", DOCS_CHANNEL_DATA)
    assert signed == "1234.1234:presence-foobar:" + DOCS_CHANNEL_DATA
    assert signing.check_auth_token(DOCS_PRESENCE, CREDENTIALS, signed) is None
    spaced = signing.channel_auth_string(
        "1234.1234", "presence-foobar", DOCS_CHANNEL_DATA.replace(",", ", ")
    )
    assert signing.check_auth_token(DOCS_PRESENCE, CREDENTIALS, spaced) is not None


def test_user_auth_string_has_double_colons() -> None:
    assert signing.user_auth_string("1.2", '{"id":"u"}') == '1.2::user::{"id":"u"}'
