"""Close and error codes of protocol 7, and the HTTP API's error type.

Close-code ranges decide what pusher-js does next (docs/protocol.md §18): 4000 switches to TLS,
4001-4099 and >= 4300 stop reconnecting, 4100-4199 reconnect after a second,
4200-4299 reconnect at once.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_TIMEOUT = 4201
    INACTIVITY = 4202
    CLIENT_EVENT_RATE_LIMIT = 4301


class ConnectRefused(Exception):
    """A WebSocket connection must be refused with ``code`` (sent as pusher:error, then close)."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApiError(Exception):
    """An HTTP API request fails with ``status``.

    The reply body is ``{"error": message, "code": status}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadMessage(Exception):
    """A client frame is unusable; answered with a ``pusher:error`` whose code is null."""
