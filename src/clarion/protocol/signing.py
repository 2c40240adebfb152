"""HMAC-SHA256 signatures: HTTP API requests, channel authorisation, user sign-in, webhooks.

Every comparison of a signature is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any
from urllib.parse import unquote, unquote_plus

from clarion.protocol.errors import ApiError

_hmac_new: Callable[..., Any]
try:
    # OpenSSL's HMAC object itself: copy, update and hexdigest are C calls, where
    # hmac.HMAC wraps each in Python frames (four of them per signature checked).
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    _hmac_new = hmac.new

TIMESTAMP_WINDOW = 600
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
# The parameters every signed request has, and the one that is not signed.
_REQUIRED = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
_SIGNATURE = "auth_signature"


def sign(secret: str, message: str | bytes) -> str:
    if isinstance(message, str):
        message = message.encode()
    return hmac.digest(secret.encode(), message, "sha256").hex()


def _equal(a: str, b: str) -> bool:
    if a.isascii() and b.isascii():
        return hmac.compare_digest(a, b)
    return hmac.compare_digest(a.encode(), b.encode())


# --- HTTP API requests (docs/protocol.md §32) --------------------------------------


def string_to_sign(method: str, path: str, params: dict[str, str]) -> str:
    keys = sorted(params)
    if not "".join(keys).islower():
        # Keys are lower-cased before sorting (the SDKs already send lower-case keys).
        pairs = sorted((key.lower(), value) for key, value in params.items())
        query = "&".join([f"{key}={value}" for key, value in pairs if key != _SIGNATURE])
    else:
        query = "&".join([f"{key}={params[key]}" for key in keys if key != _SIGNATURE])
    return f"{method.upper()}\n{path}\n{query}"


def parse_query(raw_query: str) -> dict[str, str]:
    """Decode a query string into single values; a repeated key is refused (401).

    The SDKs send values unescaped, so the common case is a plain split; a pair is only
    percent-decoded when it contains ``%`` or ``+`` (same result as ``parse_qsl``).
    """
    params: dict[str, str] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            key, value = unquote_plus(key), unquote_plus(value)
        if key in params:
            raise ApiError(401, f"Repeated query parameter: {key}")
        params[key] = value
    return params


@dataclass(frozen=True, slots=True)
class Credentials:
    key: str
    secret: str
    # HMAC state with the key already absorbed: copying it is cheaper than a new key setup.
    _mac: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mac", _hmac_new(self.secret.encode(), digestmod="sha256"))

    def sign(self, message: str) -> str:
        mac = self._mac.copy()
        mac.update(message.encode())
        return str(mac.hexdigest())


def verify_request(
    method: str,
    raw_path: str,
    params: dict[str, str],
    body: bytes,
    credentials: Credentials,
    now: float,
) -> None:
    """Check a signed HTTP API request; raise ApiError(401) with a useful message if wrong.

    ``params`` is the decoded query (from :func:`parse_query`); ``raw_path`` is the path as
    received. The caller has already found the app, so ``credentials`` are its key and secret.
    """
    for name in _REQUIRED:
        if name not in params:
            raise ApiError(401, f"Missing authentication parameter: {name}")
    if not _equal(params["auth_key"], credentials.key):
        raise ApiError(401, "Unknown auth_key for this app")
    version = params["auth_version"]
    if version != "1.0":
        raise ApiError(401, f"Unsupported auth_version {version!r}: expected 1.0")
    try:
        timestamp = int(params["auth_timestamp"])
    except ValueError:
        raise ApiError(401, "auth_timestamp must be an integer (Unix seconds)") from None
    if abs(now - timestamp) > TIMESTAMP_WINDOW:
        raise ApiError(
            401,
            f"Timestamp expired: auth_timestamp {timestamp} is more than {TIMESTAMP_WINDOW} s "
            f"from the server time {int(now)}; check the clock",
        )
    given_md5 = params.get("body_md5")
    if body:
        if given_md5 is None:
            raise ApiError(401, "Missing body_md5 for a request with a body")
        # (A hex digest is ASCII: _equal's test, without its call.)
        if not (given_md5.isascii() and compare_digest(given_md5, hashlib.md5(body).hexdigest())):
            raise ApiError(401, "body_md5 does not match the MD5 of the request body")
    elif given_md5 is not None and given_md5 != EMPTY_MD5:
        raise ApiError(401, "body_md5 given for an empty body is not the MD5 of an empty string")

    signature = params["auth_signature"]
    candidate = string_to_sign(method, raw_path, params)
    if signature.isascii() and compare_digest(credentials.sign(candidate), signature):
        return
    decoded_path = unquote(raw_path)
    if decoded_path != raw_path and _equal(
        credentials.sign(string_to_sign(method, decoded_path, params)), signature
    ):
        return
    raise ApiError(401, f"Invalid signature: expected HMAC-SHA256 hex digest of {candidate!r}")


# --- channel authorisation and user sign-in (docs/protocol.md §33, §34, §36) --------


def channel_auth_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_auth_string(socket_id: str, user_data: str) -> str:
    return f"{socket_id}::user::{user_data}"


def check_auth_token(token: object, credentials: Credentials, signed: str) -> str | None:
    """Check ``key:signature`` over ``signed``; None when valid, else why it is not."""
    if not isinstance(token, str) or not token:
        return "Missing auth signature"
    key, sep, signature = token.partition(":")
    if not sep or not _equal(key, credentials.key):
        return f"Invalid key in auth token: expected {credentials.key}:<signature>"
    if not _equal(signature, credentials.sign(signed)):
        return f"Invalid signature: Expected HMAC SHA256 hex digest of {signed}"
    return None
