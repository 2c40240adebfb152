"""The connect URL's rules: which app, which protocol version; accept or refuse, and how.

A client connects to ``{prefix}/app/{key}?protocol=7&client=js&version=8.4.0``. The URL
is checked in this order, and the first rule broken refuses the connection with its
close code (sent as ``pusher:error``, then as the close frame):

1. the path is ``{prefix}/app/{key}`` with a non-empty key and nothing after it, else
   4005 (path not found);
2. ``protocol``, when given, is an integer from 5 to 7, else 4007 (unsupported);
3. the key names an app, else 4001 (app not found);
4. the app is enabled, else 4003 (app disabled).

``client`` and ``version`` are informational and never refuse. What the server's state
decides after these (connection quotas, shutdown, per-address caps) is the admission's
(``clarion.server.admission``). Pure: the app is looked up through the function given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import unquote_plus

from clarion.protocol.errors import CloseCode, ConnectRefused

MIN_PROTOCOL = 5
MAX_PROTOCOL = 7


class Enablable(Protocol):
    @property
    def enabled(self) -> bool: ...


A = TypeVar("A", bound=Enablable)


def query_value(query: str, name: str) -> str | None:
    """One parameter of a query string (the first), percent-decoded if needed."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


def app_key(path: str, query: str, prefix: str) -> str:
    """The app key of a connect URL after the path and protocol rules (1, 2); raise
    :class:`ConnectRefused` when one is broken."""
    start = prefix + "/app/"
    key = path[len(start) :] if path.startswith(start) else ""
    if not key or "/" in key:
        raise ConnectRefused(CloseCode.PATH_NOT_FOUND, f"Path not found: {path}")
    protocol = query_value(query, "protocol")
    if protocol is not None:
        if not protocol.isdigit():
            # A protocol that is not an integer is unsupported, like one out of range.
            raise ConnectRefused(
                CloseCode.UNSUPPORTED_PROTOCOL, f"Invalid protocol version: {protocol!r}"
            )
        if not MIN_PROTOCOL <= int(protocol) <= MAX_PROTOCOL:
            raise ConnectRefused(
                CloseCode.UNSUPPORTED_PROTOCOL,
                f"Unsupported protocol version {protocol}: this server speaks 7",
            )
    return key


def connect_app(path: str, query: str, prefix: str, lookup: Callable[[str], A | None]) -> A:
    """The app a connect URL names, after every rule above; raise :class:`ConnectRefused`."""
    key = app_key(path, query, prefix)
    app = lookup(key)
    if app is None:
        raise ConnectRefused(CloseCode.APP_NOT_FOUND, f"App key {key} does not exist.")
    if not app.enabled:
        raise ConnectRefused(CloseCode.APP_DISABLED, "Application disabled")
    return app
