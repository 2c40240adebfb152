"""The admin console's HTTP surface without a browser: sign-in, the 401 and 403 cases,
the live stream, "Send an event" through the HTTP API's path, and no secret anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.admin.conftest import TOKEN, Admin, console_of
from tests.support.config import app, build_config
from tests.support.polling import until
from tests.support.pusherjs import Driver
from tests.support.raw import ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

SECRETS = ("app-secret", "other-secret")
DATA_ENDPOINTS = [
    ("GET", "/admin/api/overview"),
    ("GET", "/admin/api/apps/1/channels"),
    ("GET", "/admin/api/apps/1/channels/presence-room"),
    ("GET", "/admin/api/apps/1/webhooks"),
    ("GET", "/admin/api/apps/1/errors"),
    ("GET", "/admin/api/apps/1/stream"),
    ("POST", "/admin/api/apps/1/events"),
]


def sign_in(admin: Admin) -> httpx.Client:
    """A client holding a session (its cookie), opened by the token URL."""
    client = httpx.Client(base_url=admin.base, timeout=5)
    reply = client.get(f"/admin/?token={admin.token}")
    assert reply.status_code == 303
    return client


@contextmanager
def signed_in(admin: Admin) -> Iterator[httpx.Client]:
    client = sign_in(admin)
    try:
        yield client
    finally:
        client.close()


def same_origin(admin: Admin) -> dict[str, str]:
    return {"Origin": admin.base}


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
def test_every_data_endpoint_answers_401_without_a_session(
    admin: Admin, method: str, path: str
) -> None:
    reply = httpx.request(method, admin.base + path, headers=same_origin(admin), timeout=5)
    assert reply.status_code == 401


def test_the_page_without_a_session_is_the_sign_in_form(admin: Admin) -> None:
    for path in ("/admin/", "/admin/apps/1"):
        reply = httpx.get(admin.base + path, timeout=5)
        assert reply.status_code == 401
        assert 'type="password"' in reply.text
        assert "Admin token" in reply.text
        assert "Sign in" in reply.text


def test_the_token_url_opens_a_session_and_drops_the_token(admin: Admin) -> None:
    reply = httpx.get(f"{admin.base}/admin/apps/1?token={admin.token}", timeout=5)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/admin/apps/1"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert admin.token not in cookie
    session = cookie.split(";")[0]
    page = httpx.get(admin.base + "/admin/apps/1", headers={"Cookie": session}, timeout=5)
    assert page.status_code == 200
    assert 'role="log"' in page.text


def test_a_wrong_token_is_refused(admin: Admin) -> None:
    reply = httpx.get(f"{admin.base}/admin/?token=not-the-token-at-all", timeout=5)
    assert reply.status_code == 401
    assert "set-cookie" not in reply.headers
    assert "Wrong token" in reply.text
    login = httpx.post(
        admin.base + "/admin/login",
        data={"token": "not-the-token-at-all"},
        headers=same_origin(admin),
        timeout=5,
    )
    assert login.status_code == 401
    assert "set-cookie" not in login.headers


def test_a_cross_origin_sign_in_is_refused(admin: Admin) -> None:
    reply = httpx.post(
        admin.base + "/admin/login",
        data={"token": admin.token},
        headers={"Origin": "http://evil.example"},
        timeout=5,
    )
    assert reply.status_code == 403
    assert "set-cookie" not in reply.headers


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null"])
def test_a_change_without_a_same_origin_header_is_403(admin: Admin, origin: str | None) -> None:
    with signed_in(admin) as client:
        headers = {"Origin": origin} if origin else {}
        body = {"channel": "c", "event": "e", "data": "{}"}
        reply = client.post("/admin/api/apps/1/events", json=body, headers=headers)
        assert reply.status_code == 403


class Stream:
    """The live rows of one app, read on a thread."""

    def __init__(self, client: httpx.Client, app_id: str) -> None:
        self.rows: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._context = client.stream("GET", f"/admin/api/apps/{app_id}/stream", timeout=None)
        self.reply = self._context.__enter__()
        assert self.reply.status_code == 200
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.reply.iter_lines():
                self.raw.append(line)
                if line.startswith("data: "):
                    self.rows.append(json.loads(line[6:]))
        except (httpx.HTTPError, RuntimeError):
            pass

    def wait(self, **fields: Any) -> dict[str, Any]:
        def found() -> bool:
            return any(all(row.get(k) == v for k, v in fields.items()) for row in self.rows)

        until(found, what=f"a row with {fields}; rows: {self.rows[-10:]}")
        return next(r for r in self.rows if all(r.get(k) == v for k, v in fields.items()))

    def close(self) -> None:
        """Close the stream for real: httpx closing a response that another thread is
        reading leaves the connection open, and the server would see the console as
        still there."""
        stream = self.reply.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.reply.close()


@pytest.fixture
def stream(admin: Admin) -> Iterator[Callable[[str], Stream]]:
    opened: list[tuple[httpx.Client, Stream]] = []

    def open_(app_id: str = "1") -> Stream:
        client = sign_in(admin)
        s = Stream(client, app_id)
        opened.append((client, s))
        return s

    yield open_
    for client, s in opened:
        s.close()
        client.close()


def test_the_live_stream_shows_connections_subscriptions_and_api_messages(
    admin: Admin, stream: Callable[[str], Stream], make_driver: Callable[..., Driver]
) -> None:
    rows = stream("1")
    driver = make_driver(admin.server)
    client = driver.client("a")
    rows.wait(type="Connection", socket_id=client.socket_id)
    client.subscribe("live-channel")
    rows.wait(type="Subscribed", socket_id=client.socket_id, channel="live-channel")
    rows.wait(type="Occupied", channel="live-channel")
    python_sdk(admin.server).trigger("live-channel", "sdk-event", {"n": 1})
    row = rows.wait(type="API Message", channel="live-channel", event="sdk-event")
    assert json.loads(row["details"]) == {"n": 1}
    client.disconnect()
    rows.wait(type="Disconnection", socket_id=client.socket_id)


def test_send_an_event_goes_through_the_api_path(
    admin: Admin, stream: Callable[[str], Stream], make_driver: Callable[..., Driver]
) -> None:
    rows = stream("1")
    client = make_driver(admin.server).client("b")
    client.subscribe("form-channel")
    client.bind("form-channel", "from-form")
    with signed_in(admin) as http:
        body = {"channel": "form-channel", "event": "from-form", "data": '{"hello":1}'}
        reply = http.post("/admin/api/apps/1/events", json=body, headers=same_origin(admin))
        assert reply.status_code == 200, reply.text
        received = client.wait_event("form-channel", "from-form")
        assert received["data"] == {"hello": 1}
        rows.wait(type="API Message", event="from-form")
        # The API's own validation and its message.
        bad = {"channel": "bad channel!", "event": "e", "data": "{}"}
        refused = http.post("/admin/api/apps/1/events", json=bad, headers=same_origin(admin))
        assert refused.status_code == 400
        assert "channel" in refused.text.lower()


def test_no_secret_in_any_response_body(admin: Admin, make_driver: Callable[..., Driver]) -> None:
    client = make_driver(admin.server).client("c")
    client.subscribe("presence-room", presence={"user_id": "u1", "user_info": {"name": "Ann"}})
    bodies: list[str] = []
    with signed_in(admin) as http:
        for path in (
            "/admin/",
            "/admin/apps/1",
            "/admin/static/app.js",
            "/admin/static/style.css",
            "/admin/static/index.html",
            "/admin/static/signin.html",
            "/admin/api/overview",
            "/admin/api/apps/1/channels",
            "/admin/api/apps/1/channels/presence-room",
            "/admin/api/apps/1/webhooks",
            "/admin/api/apps/1/errors",
            "/admin/api/apps/2/channels",
        ):
            reply = http.get(path)
            assert reply.status_code == 200, path
            bodies.append(reply.text)
    members = json.loads(bodies[8])["members"]
    assert members == [{"user_id": "u1", "user_info": {"name": "Ann"}}]
    for body in bodies:
        for secret in (*SECRETS, admin.token):
            assert secret not in body


def test_webhook_deliveries_rows_and_retry_of_a_given_up_one(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[..., Driver],
    receiver: Receiver,
) -> None:
    hook = {"url": receiver.url + "/hook", "event_types": ["channel_occupied"]}
    config = build_config(
        app(webhooks=[hook]),
        server={"host": "127.0.0.1"},
        webhooks={"retry_for": 0.5},
        admin={"host": "127.0.0.1", "port": 0, "token": TOKEN},
    )
    console = console_of(make_server(config))
    receiver.scripts["/hook"] = [500]
    with signed_in(console) as http:
        rows = Stream(http, "1")
        try:
            make_driver(console.server).client("w").subscribe("hooked")
            row = rows.wait(type="Webhook")
            assert "HTTP 500" in row["details"]
            assert "/hook" in row["details"]

            def given_up() -> list[dict[str, Any]]:
                reply: list[dict[str, Any]] = http.get("/admin/api/apps/1/webhooks").json()[
                    "given_up"
                ]
                return reply

            until(lambda: bool(given_up()), what="the delivery given up")
            [entry] = given_up()
            errors = http.get("/admin/api/apps/1/errors").json()["errors"]
            assert any(e["kind"] == "Webhook failure" for e in errors)
            receiver.scripts["/hook"] = [200]
            origin = same_origin(console)
            cross = http.post(f"/admin/api/apps/1/webhooks/retry/{entry['id']}")
            assert cross.status_code == 403
            retried = http.post(f"/admin/api/apps/1/webhooks/retry/{entry['id']}", headers=origin)
            assert retried.status_code == 200
            receiver.wait_for(lambda requests: any(r.status == 200 for r in requests))
            assert [e["name"] for e in receiver.events("/hook")] == ["channel_occupied"]
            again = http.post(f"/admin/api/apps/1/webhooks/retry/{entry['id']}", headers=origin)
            assert again.status_code == 404
        finally:
            rows.close()


def test_errors_are_grouped_auth_failures_and_refused_connections(
    make_server: Callable[..., RunningServer], make_driver: Callable[..., Driver]
) -> None:
    config = build_config(
        app(max_connections=1, allowed_origins=["https://app.example"]),
        server={"host": "127.0.0.1"},
        admin={"host": "127.0.0.1", "port": 0, "token": TOKEN},
    )
    console = console_of(make_server(config))
    driver = make_driver(console.server)
    client = driver.client("first")
    client.subscribe("private-vault", secret="not-the-app-secret", wait=False)
    client.wait(type="subscription_error", channel="private-vault")
    refused = driver.client("second", wait=False)
    refused.wait_closed(4004)
    foreign = refused_origin(console.server, "https://elsewhere.example")
    assert foreign == 4009
    with signed_in(console) as http:

        def errors() -> dict[str, int]:
            groups = http.get("/admin/api/apps/1/errors").json()["errors"]
            return {f"{g['kind']}: {g['message']}": g["count"] for g in groups}

        until(lambda: len(errors()) == 3, what=f"three error groups; got {errors()}")
        found = errors()
        assert found["Refused origin: 4009: Origin not allowed: https://elsewhere.example"] == 1
        auth = next(k for k in found if k.startswith("Auth failure"))
        assert "private-vault" in auth
        assert "4004" in next(k for k in found if k.startswith("Quota"))
        assert found[auth] == 1
        # The signature the client sent is never shown.
        assert "not-the-app-secret" not in str(found)


def test_without_a_cluster_the_overview_lists_this_node_only(admin: Admin) -> None:
    with signed_in(admin) as http:
        overview = http.get("/admin/api/overview").json()
    assert overview["cluster"] is False
    [node] = overview["nodes"]
    assert node["this"] is True
    assert ":" in node["name"]  # host:pid
    assert node["heartbeat_age"] is None
    assert 0 < time.time() - node["up_since"] < 600


def test_hostile_requests_get_a_400_not_a_traceback(admin: Admin) -> None:
    host, port = admin.base.removeprefix("http://").split(":")
    for request in (
        b"GARBAGE\r\n\r\n",
        b"GET /admin/ HTTP/1.1\r\nNoColonHere\r\n\r\n",
        b"GET /admin/ HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
        b"POST /admin/login HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            reply = sock.recv(200)
            assert reply.startswith(b"HTTP/1.1 400"), (request[:40], reply)
    # Paths that try to leave the static folder.
    for path in ("/admin/static/..%2Fserver.py", "/admin/static/.hidden", "/admin/../etc"):
        assert httpx.get(admin.base + path, timeout=5).status_code in (401, 404)


def refused_origin(server: RunningServer, origin: str) -> int:
    """Open a WebSocket to app 1 with ``origin``; the close code it ends with."""

    async def attempt() -> int:
        ws = await ws_connect(server.ws(), origin=origin)  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code is not None
        return ws.close_code

    return asyncio.run(attempt())
