"""Plain WebSocket and HTTP helpers: frames and signed requests written by hand, no Pusher
library involved."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 10


async def ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    # An unbounded client queue: a test socket that does not read what it is sent (say,
    # member_added frames) must still complete its close handshake promptly.
    kwargs.setdefault("max_queue", None)
    return await connect(url, open_timeout=TIMEOUT, compression=None, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    import asyncio

    raw = await asyncio.wait_for(ws.recv(), timeout)
    message: dict[str, Any] = json.loads(raw)
    return message


async def established(ws: ClientConnection) -> str:
    message = await recv_json(ws)
    assert message["event"] == "pusher:connection_established"
    data = json.loads(message["data"])
    socket_id: str = data["socket_id"]
    return socket_id


async def subscribe(ws: ClientConnection, channel: str, **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **extra}}))
    return await recv_json(ws)


def sign_params(
    method: str,
    path: str,
    body: bytes,
    key: str = "app-key",
    secret: str = "app-secret",
    timestamp: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Sign a request the way the official SDKs do (docs/protocol.md §32), written independently."""
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
        **(extra or {}),
    }
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["auth_signature"] = hmac.new(
        secret.encode(), f"{method}\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    return params


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    target = path + ("?" + urlencode(params, safe=",:") if params else "")
    conn.request(method, target, body=body or None, headers=headers or {})
    reply = conn.getresponse()
    raw = reply.read()
    conn.close()
    reply_headers = {k.lower(): v for k, v in reply.getheaders()}
    return reply.status, json.loads(raw) if raw else None, reply_headers


def signed(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    key: str = "app-key",
    secret: str = "app-secret",
    **kwargs: Any,
) -> tuple[int, Any, dict[str, str]]:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body else b"")
    params = sign_params(method, path, raw, key, secret, **kwargs)
    return http_request(host, port, method, path, raw, params)


def occupied(server_host: str, server_port: int, app_id: str = "1") -> dict[str, Any]:
    status, body, _ = signed(server_host, server_port, "GET", f"/apps/{app_id}/channels")
    assert status == 200
    channels: dict[str, Any] = body["channels"]
    return channels
