"""The HTTP API driven by hand-built requests: every auth failure, limit and error status."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.config import app, build_config
from tests.support.polling import until
from tests.support.raw import http_request, sign_params, signed
from tests.support.server import RunningServer


def _event(**overrides: Any) -> dict[str, Any]:
    return {"name": "my-event", "channels": ["my-channel"], "data": "{}", **overrides}


def test_health_and_ready(server: RunningServer) -> None:
    for path in ("/", "/up"):
        status, body, headers = http_request(server.host, server.port, "GET", path)
        assert status == 200 and body == {"ok": True}
        assert headers["content-type"] == "application/json"
    status, body, _ = http_request(server.host, server.port, "GET", "/ready")
    assert status == 200 and body == {"ready": True}


def test_publish_success_body_is_json(server: RunningServer) -> None:
    status, body, headers = signed(server.host, server.port, "POST", "/apps/1/events", _event())
    assert (status, body) == (200, {})
    assert headers["content-type"] == "application/json"


def test_publish_info_reply_has_a_key_per_channel(server: RunningServer) -> None:
    status, body, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/1/events",
        _event(channels=["a-chan", "presence-room"], info="subscription_count,user_count"),
    )
    assert status == 200
    assert body == {
        "channels": {
            "a-chan": {"subscription_count": 0},
            "presence-room": {"user_count": 0, "subscription_count": 0},
        }
    }


@pytest.mark.parametrize(
    ("mutate", "message_part"),
    [
        (lambda p: p.pop("auth_signature"), "auth_signature"),
        (lambda p: p.pop("auth_key"), "auth_key"),
        (lambda p: p.pop("auth_timestamp"), "auth_timestamp"),
        (lambda p: p.pop("auth_version"), "auth_version"),
        (lambda p: p.update(auth_signature="0" * 64), "Invalid signature"),
        (lambda p: p.update(auth_key="other-key"), "auth_key"),
        (lambda p: p.update(body_md5="0" * 32), "body_md5"),
        (lambda p: p.pop("body_md5"), "body_md5"),
    ],
)
def test_auth_failures_are_401(server: RunningServer, mutate: Any, message_part: str) -> None:
    body = json.dumps(_event()).encode()
    params = sign_params("POST", "/apps/1/events", body)
    mutate(params)
    status, reply, _ = http_request(
        server.host, server.port, "POST", "/apps/1/events", body, params
    )
    assert status == 401
    assert reply["code"] == 401
    assert message_part in reply["error"]


def test_signed_with_the_wrong_secret_is_401(server: RunningServer) -> None:
    status, reply, _ = signed(
        server.host, server.port, "POST", "/apps/1/events", _event(), secret="nope"
    )
    assert status == 401 and "Invalid signature" in reply["error"]
    assert "app-secret" not in reply["error"]


@pytest.mark.parametrize("skew", [-601, 601, -3600])
def test_expired_timestamp_is_401(server: RunningServer, skew: int) -> None:
    status, reply, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/1/events",
        _event(),
        timestamp=int(time.time()) + skew,
    )
    assert status == 401 and "Timestamp" in reply["error"]


def test_timestamp_within_window_is_accepted(server: RunningServer) -> None:
    status, _, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/1/events",
        _event(),
        timestamp=int(time.time()) - 500,
    )
    assert status == 200


def test_auth_version_other_than_1_0_is_401(server: RunningServer) -> None:
    body = json.dumps(_event()).encode()
    params = sign_params("POST", "/apps/1/events", body, extra={"auth_version": "2.0"})
    status, _, _ = http_request(server.host, server.port, "POST", "/apps/1/events", body, params)
    assert status == 401


def test_key_of_another_app_is_401(server: RunningServer) -> None:
    status, _, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/1/events",
        _event(),
        key="other-key",
        secret="other-secret",
    )
    assert status == 401


def test_unknown_app_is_404_and_disabled_app_is_403(server: RunningServer) -> None:
    status, reply, _ = signed(server.host, server.port, "POST", "/apps/999/events", _event())
    assert status == 404 and reply["code"] == 404
    status, reply, _ = signed(
        server.host,
        server.port,
        "POST",
        "/apps/3/events",
        _event(),
        key="disabled-key",
        secret="disabled-secret",
    )
    assert status == 403 and reply["code"] == 403


def test_unknown_route_is_404_and_wrong_method_405(server: RunningServer) -> None:
    status, _, _ = signed(server.host, server.port, "GET", "/apps/1/nothing-here")
    assert status == 404
    status, _, _ = signed(server.host, server.port, "GET", "/apps/1/events")
    assert status == 405
    status, _, _ = http_request(server.host, server.port, "GET", "/favicon.ico")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (_event(name=""), 400),
        (_event(name="pusher:thing"), 400),
        (_event(name="pusher_internal:thing"), 400),
        (_event(name="x" * 201), 400),
        (_event(channels=[]), 400),
        (_event(channels=[f"c{i}" for i in range(101)]), 400),
        (_event(channels=["bad channel"]), 400),
        (_event(channels=["x" * 201]), 400),
        (_event(socket_id="abc"), 400),
        (_event(socket_id="1.2.3"), 400),
        (_event(info="bogus"), 400),
        ({"name": "x", "data": "y"}, 400),
        ({"name": "x", "channels": ["c"]}, 400),
        (_event(data="x" * 10241), 413),
        (_event(data="é" * 5121), 413),
    ],
)
def test_publish_validation(server: RunningServer, body: Any, status: int) -> None:
    got, reply, _ = signed(server.host, server.port, "POST", "/apps/1/events", body)
    assert got == status, reply
    assert reply["code"] == status and reply["error"]


def test_publish_limits_at_the_edge_are_accepted(server: RunningServer) -> None:
    body = _event(
        channels=[f"c{i}" for i in range(100)],
        data="x" * 10240,
        name="n" * 200,
        socket_id="1.1",
    )
    status, reply, _ = signed(server.host, server.port, "POST", "/apps/1/events", body)
    assert (status, reply) == (200, {})


def test_single_channel_field_and_non_string_data(server: RunningServer) -> None:
    body = {"name": "x", "channel": "single", "data": {"a": 1}}
    status, reply, _ = signed(server.host, server.port, "POST", "/apps/1/events", body)
    assert (status, reply) == (200, {})


@pytest.mark.parametrize(
    ("batch", "status"),
    [
        ([], 400),
        ([{"channel": "c", "name": "e", "data": "d"}] * 11, 400),
        (
            [{"channel": "c", "name": "e", "data": "d"}, {"channel": "c", "name": "", "data": "d"}],
            400,
        ),
        (
            [
                {"channel": "c", "name": "e", "data": "d"},
                {"channel": "c", "name": "e", "data": "x" * 10241},
            ],
            413,
        ),
        ("nope", 400),
    ],
)
def test_batch_validation(server: RunningServer, batch: Any, status: int) -> None:
    got, reply, _ = signed(
        server.host, server.port, "POST", "/apps/1/batch_events", {"batch": batch}
    )
    assert got == status, reply


def test_batch_reply_is_aligned_with_the_request(server: RunningServer) -> None:
    batch = [
        {"channel": "b1", "name": "e", "data": "d"},
        {
            "channel": "presence-b2",
            "name": "e",
            "data": "d",
            "info": "user_count,subscription_count",
        },
    ]
    status, reply, _ = signed(
        server.host, server.port, "POST", "/apps/1/batch_events", {"batch": batch}
    )
    assert status == 200
    assert reply == {"batch": [{}, {"user_count": 0, "subscription_count": 0}]}


def test_channel_queries_validation(server: RunningServer) -> None:
    host, port = server.host, server.port
    status, _, _ = signed(host, port, "GET", "/apps/1/channels", extra={"info": "user_count"})
    assert status == 400
    status, body, _ = signed(
        host,
        port,
        "GET",
        "/apps/1/channels",
        extra={"info": "user_count", "filter_by_prefix": "presence-"},
    )
    assert (status, body) == (200, {"channels": {}})
    status, _, _ = signed(
        host, port, "GET", "/apps/1/channels/public-one", extra={"info": "user_count"}
    )
    assert status == 400
    status, body, _ = signed(host, port, "GET", "/apps/1/channels/public-one")
    assert (status, body) == (200, {"occupied": False})
    status, _, _ = signed(host, port, "GET", "/apps/1/channels/public-one/users")
    assert status == 400
    status, body, _ = signed(host, port, "GET", "/apps/1/channels/presence-empty/users")
    assert (status, body) == (200, {"users": []})
    status, _, _ = signed(host, port, "GET", "/apps/1/channels/bad%20name")
    assert status == 400


def test_terminate_connections_both_paths(server: RunningServer) -> None:
    status, body, _ = signed(
        server.host, server.port, "POST", "/apps/1/users/someone/terminate_connections", {}
    )
    assert (status, body) == (200, {})
    # pusher-http-python 3.3.x: no /apps/{id}; the app comes from auth_key.
    status, body, _ = signed(
        server.host, server.port, "POST", "/users/someone/terminate_connections", {}
    )
    assert (status, body) == (200, {})
    status, _, _ = signed(
        server.host,
        server.port,
        "POST",
        "/users/someone/terminate_connections",
        {},
        key="unknown",
        secret="x",
    )
    assert status == 401


def _raw_exchange(server: RunningServer, payload: bytes, expect: int) -> list[bytes]:
    """Send raw bytes and read ``expect`` HTTP responses."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect or not _complete(data, expect):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def _complete(data: bytes, expect: int) -> bool:
    parts = data.split(b"HTTP/1.1 ")[1:]
    if len(parts) < expect:
        return False
    last = parts[-1]
    head, _, body = last.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return len(body) >= length


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("/up", "/nope", "/ready")
    )
    replies = _raw_exchange(server, requests, 3)
    assert [r.split(b" ")[1] for r in replies] == [b"200", b"404", b"200"]


def test_malformed_http_is_400(server: RunningServer) -> None:
    replies = _raw_exchange(server, b"THIS IS NOT HTTP\r\n\r\n", 1)
    assert replies and replies[0].startswith(b"HTTP/1.1 400")


def test_oversized_body_is_413(server: RunningServer) -> None:
    body = b"x" * (1024 * 1024 + 10)
    head = (
        f"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    replies = _raw_exchange(server, head + body, 1)
    assert replies and replies[0].startswith(b"HTTP/1.1 413")


def test_a_body_announced_too_large_is_413_before_it_is_sent(server: RunningServer) -> None:
    head = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    replies = _raw_exchange(server, head, 1)  # the head alone: no body byte follows
    assert replies and replies[0].startswith(b"HTTP/1.1 413")
    assert b"Request body larger than" in replies[0]


def test_get_on_websocket_path_without_upgrade(server: RunningServer) -> None:
    status, body, _ = http_request(server.host, server.port, "GET", "/app/app-key")
    assert status == 426 and body["code"] == 426


def test_oversized_request_head_is_431(server: RunningServer) -> None:
    head = b"GET /up HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    replies = _raw_exchange(server, head, 1)
    assert replies and replies[0].startswith(b"HTTP/1.1 431")


def test_bad_websocket_key_is_400(server: RunningServer) -> None:
    request = (
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: \xff\xfe-not-base64\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    replies = _raw_exchange(server, request, 1)
    assert replies and replies[0].startswith(b"HTTP/1.1 400")
    # The server is unharmed.
    assert http_request(server.host, server.port, "GET", "/up")[0] == 200


def test_idle_sockets_count_against_the_address_limit(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(build_config(app(), server={"max_connections_per_ip": 3}))
    idle = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(3)]
    # Sockets that never sent a byte hold their slots: the fourth connection is refused.
    status, body, _ = http_request(server.host, server.port, "GET", "/up")
    assert status == 503 and body["code"] == 503
    for sock in idle:
        sock.close()
    until(lambda: http_request(server.host, server.port, "GET", "/up")[0] == 200, 5, "slots freed")
