"""Who may use the admin console: the token, the sessions it opens, and the same-origin
rule for requests that change something.

The token (``[admin] token`` / ``CLARION_ADMIN_TOKEN``) is exchanged once for a session:
a random id kept in this process and sent back as an HttpOnly, SameSite=Strict cookie, so
the token never stays in the address bar, the history or a script's reach.
"""

from __future__ import annotations

import hmac
import secrets
import time

COOKIE = "clarion_admin"
# A session lasts this long (seconds) after its last use.
SESSION_IDLE = 12 * 3600
# Sessions kept at most (the oldest goes first): a token guesser cannot fill memory.
MAX_SESSIONS = 1000


class Sessions:
    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._sessions: dict[str, float] = {}

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def open(self) -> str:
        """A new session id (the caller checked the token)."""
        session = secrets.token_urlsafe(32)
        self._sessions[session] = time.monotonic()
        if len(self._sessions) > MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return session

    def close(self, session: str | None) -> None:
        if session is not None:
            self._sessions.pop(session, None)

    def valid(self, cookie_header: str | None) -> str | None:
        """The session id in a Cookie header, if it is a live session."""
        session = session_of(cookie_header)
        if session is None:
            return None
        used = self._sessions.get(session)
        now = time.monotonic()
        if used is None or now - used > SESSION_IDLE:
            self._sessions.pop(session, None)
            return None
        self._sessions[session] = now
        return session


def session_of(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def set_cookie(session: str) -> str:
    return f"{COOKIE}={session}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={SESSION_IDLE}"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's Origin is this console's own (``http://`` + its Host)."""
    if not origin or not host:
        return False
    return origin in (f"http://{host}", f"https://{host}")
