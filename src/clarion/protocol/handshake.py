"""The connect URL's rules: which app, which protocol version; accept or refuse, and how.

A client connects to ``{prefix}/app/{key}?protocol=7&client=js&version=8.4.0``. The URL
is checked in this order, and the first rule broken refuses the connection with its
close code (sent as ``pusher:error``, then as the close frame):

1. the path is ``{prefix}/app/{key}`` with a non-empty key and nothing after it, else
   4005 (path not found);
2. ``protocol``, when given, is an integer from 5 to 7, else 4007 (unsupported);
3. the key names an app, else 4001 (app not found);
4. the app is enabled, else 4003 (app disabled).

``client`` and ``version`` are informational and never refuse. Then the ``Origin`` header
of the upgrade, when there is one, must be allowed by the app's ``allowed_origins``, else
4009 "Origin not allowed" (:func:`check_origin`; a request without an Origin, from a
native app or a server, is never refused by it). What the server's state
decides after these (connection quotas, shutdown, per-address caps) is the admission's
(``clarion.server.admission``). Pure: the app is looked up through the function given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import unquote_plus, urlsplit

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


# What every client sends first (pusher-js: ?protocol=7&client=js&...): the protocol
# rule is then met without reading the query further.
_PROTOCOL_7 = "protocol=7&"


def connect_app(path: str, query: str, prefix: str, lookup: Callable[[str], A | None]) -> A:
    """The app a connect URL names, after every rule above; raise :class:`ConnectRefused`."""
    # 1. the path
    start = prefix + "/app/" if prefix else "/app/"
    key = path[len(start) :] if path.startswith(start) else ""
    if not key or "/" in key:
        raise ConnectRefused(CloseCode.PATH_NOT_FOUND, f"Path not found: {path}")
    # 2. the protocol
    if not query.startswith(_PROTOCOL_7):
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
    # 3. and 4. the app
    app = lookup(key)
    if app is None:
        raise ConnectRefused(CloseCode.APP_NOT_FOUND, f"App key {key} does not exist.")
    if not app.enabled:
        raise ConnectRefused(CloseCode.APP_DISABLED, "Application disabled")
    return app


# --- origins -------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
ORIGIN_NOT_ALLOWED = "Origin not allowed"


def _split_origin(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a serialized origin (``https://host[:port]``), lower-case;
    None when it is not one (``null``, a path, credentials)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (
        not parts.scheme
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        return None
    scheme = parts.scheme.lower()
    return scheme, host.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def origin_pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be an ``allowed_origins`` entry, or None when it can."""
    if pattern == "*":
        return None
    split = _split_origin(pattern.replace("://*.", "://wildcard.", 1))
    if split is None or "*" in split[1]:
        return (
            f"{pattern!r} is not an origin: write scheme://host[:port], "
            'a host may start with "*." (https://*.example.org), or "*" for any'
        )
    return None


def origin_allowed(origin: str, patterns: list[str]) -> bool:
    """Whether ``origin`` matches one of ``patterns``: ``*`` matches any origin; otherwise
    the scheme must be the same, the host the same (case-insensitive; ``*.example.org``
    matches its subdomains, not example.org itself), and the port the same (a pattern
    without one means the scheme's default port)."""
    split = None
    for pattern in patterns:
        if pattern == "*":
            return True
        if split is None:
            split = _split_origin(origin)
            if split is None:
                return False
        wildcard = "://*." in pattern
        wanted = _split_origin(pattern.replace("://*.", "://wildcard.", 1))
        if wanted is None or wanted[0] != split[0] or wanted[2] != split[2]:
            continue
        host = split[1]
        if wildcard:
            suffix = wanted[1][len("wildcard") :]  # ".example.org"
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == wanted[1]:
            return True
    return False


def check_origin(origin: str | None, patterns: list[str]) -> None:
    """Raise :class:`ConnectRefused` (4009) when an upgrade's Origin is not allowed."""
    if origin is not None and not origin_allowed(origin, patterns):
        raise ConnectRefused(CloseCode.UNAUTHORIZED, ORIGIN_NOT_ALLOWED)
