"""Admin sessions: the token opens one, the cookie is HttpOnly and SameSite=Strict, and
only a same-origin request may change something."""

from __future__ import annotations

from clarion.admin import auth


def test_the_token_opens_a_session_the_cookie_names() -> None:
    sessions = auth.Sessions("a-token-of-16-chars")
    assert sessions.token_ok("a-token-of-16-chars")
    assert not sessions.token_ok("a-token-of-16-charz")
    session = sessions.open()
    cookie = auth.set_cookie(session)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert sessions.valid(f"other=1; {auth.COOKIE}={session}") == session
    assert sessions.valid(f"{auth.COOKIE}=made-up") is None
    assert sessions.valid(None) is None
    sessions.close(session)
    assert sessions.valid(f"{auth.COOKIE}={session}") is None


def test_sessions_are_bounded() -> None:
    sessions = auth.Sessions("a-token-of-16-chars")
    first = sessions.open()
    for _ in range(auth.MAX_SESSIONS):
        sessions.open()
    assert sessions.valid(f"{auth.COOKIE}={first}") is None


def test_same_origin() -> None:
    assert auth.same_origin("http://127.0.0.1:9602", "127.0.0.1:9602")
    assert not auth.same_origin("http://evil.example", "127.0.0.1:9602")
    assert not auth.same_origin(None, "127.0.0.1:9602")
