"""The example chat's backend over HTTP, without a browser: who may subscribe to what,
the webhook signature check, and what it refuses. The backend is told of a Clarion that
is not there (no embedded one), so that what it triggers fails."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.chat.app import MAX_FORM_BYTES
from tests.examples.conftest import Chat, serving_chat

SECRET = "chat-test-secret"
SOCKET_ID = "1234.5678"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def chat() -> Iterator[Chat]:
    with serving_chat(secret=SECRET, embedded=False, clarion_port=_closed_port()) as running:
        yield running


@pytest.fixture
def client(chat: Chat) -> Iterator[httpx.Client]:
    """A browser's worth of cookies (the session) for one test."""
    with httpx.Client(base_url=chat.base, timeout=10) as http:
        yield http


def sign(message: str) -> str:
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_in(client: Any, name: str = "Ada") -> dict[str, str]:
    answer = client.post("/api/session", json={"name": name})
    assert answer.status_code == 200, answer.text
    user: dict[str, str] = answer.json()["user"]
    return user


def authorize(client: Any, channel: str, socket_id: str = SOCKET_ID) -> Any:
    return client.post("/pusher/auth", data={"socket_id": socket_id, "channel_name": channel})


def test_the_presence_room_is_signed_with_the_user_as_member(client: Any) -> None:
    user = sign_in(client, "  Ada \n Lovelace\u202e ")
    assert user["name"] == "Ada Lovelace"
    answer = authorize(client, "presence-chat")
    assert answer.status_code == 200
    signed = answer.json()
    member = json.loads(signed["channel_data"])
    assert member == {"user_id": user["id"], "user_info": {"name": "Ada Lovelace"}}
    expected = sign(f"{SOCKET_ID}:presence-chat:{signed['channel_data']}")
    assert signed["auth"] == f"chat-key:{expected}"


def test_a_private_channel_only_for_its_own_user(client: Any) -> None:
    user = sign_in(client)
    own = authorize(client, f"private-user-{user['id']}")
    assert own.status_code == 200
    channel = f"private-user-{user['id']}"
    assert own.json() == {"auth": f"chat-key:{sign(f'{SOCKET_ID}:{channel}')}"}
    assert authorize(client, "private-user-0123456789abcdef").status_code == 403
    assert authorize(client, "presence-other-room").status_code == 403


def test_authorization_refused_without_a_session_or_with_a_bad_request(client: Any) -> None:
    assert authorize(client, "presence-chat").status_code == 401
    sign_in(client)
    assert authorize(client, "presence-chat", socket_id="not-a-socket").status_code == 400
    too_big = client.post(
        "/pusher/auth",
        content=b"socket_id=1.2&channel_name=" + b"x" * MAX_FORM_BYTES,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert too_big.status_code == 413
    assert client.post("/pusher/auth", content=b"\xff\xfe").status_code == 400


def test_sign_in_refuses_what_is_not_a_name(client: Any) -> None:
    assert client.post("/api/session", json={"name": " \t "}).status_code == 422
    assert client.post("/api/session", json={"name": "x" * 33}).status_code == 422
    assert client.post("/api/session", json={"name": 7}).status_code == 422
    assert client.post("/api/session", content=b"{not json").status_code == 400
    assert client.post("/api/session", json=["Ada"]).status_code == 400
    assert client.get("/api/me").json() == {"user": None}


def test_a_message_is_never_answered_as_sent_when_clarion_did_not_take_it(
    client: Any,
) -> None:
    assert client.post("/api/messages", json={"text": "hello"}).status_code == 401
    sign_in(client)
    assert client.post("/api/messages", json={"text": "x" * 501}).status_code == 422
    answer = client.post("/api/messages", json={"text": "hello"})
    assert answer.status_code == 502
    assert "did not take" in answer.json()["detail"]
    # Signing out is done (the cookie is cleared) even so; the answer says the user's
    # other tabs were not told.
    assert client.delete("/api/session").json() == {"user": None, "other_tabs_told": False}
    assert client.get("/api/me").json() == {"user": None}
    assert client.post("/api/messages", json={"text": "hello"}).status_code == 401


def webhook(client: Any, events: list[dict[str, Any]], **overrides: Any) -> Any:
    body = json.dumps(
        {"time_ms": overrides.pop("time_ms", int(time.time() * 1000)), "events": events}
    )
    headers = {
        "X-Pusher-Key": overrides.pop("key", "chat-key"),
        "X-Pusher-Signature": overrides.pop("signature", sign(body)),
        "Content-Type": "application/json",
    }
    return client.post("/pusher/webhooks", content=body.encode(), headers=headers)


def test_webhooks_are_checked_then_members_logged(
    client: Any, chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    added = {"name": "member_added", "channel": "presence-chat", "user_id": "ab12"}
    occupied = {"name": "channel_occupied", "channel": "presence-chat"}
    log = chat.app.state.webhook_log
    for bad in ({"signature": "0" * 64}, {"key": "other-key"}, {"time_ms": 1}):
        assert webhook(client, [added], **bad).status_code == 401
    assert list(log) == []
    with caplog.at_level(logging.INFO, logger="examples.chat"):
        assert webhook(client, [occupied, added]).status_code == 200
    assert list(log) == [added]
    assert "webhook member_added: user ab12 on presence-chat" in caplog.text
