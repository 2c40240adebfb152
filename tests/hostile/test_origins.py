"""The per-app origin allow-list (``allowed_origins``), with pusher-js under Node.

A browser on another site can open a WebSocket to the server with the app's public key;
its ``Origin`` header says which site. An app that lists its origins refuses the others
with ``pusher:error`` 4009 "Origin not allowed" and close code 4009 (pusher-js does not
retry 40xx). A client without an Origin (a native app, a server) is never refused by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.config import app, build_config
from tests.support.pusherjs import Driver
from tests.support.raw import established, recv_json, ws_connect
from tests.support.server import RunningServer

ALLOWED = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]
CONFIG = build_config(
    app(allowed_origins=ALLOWED),
    app("2", "open-key", "open-secret"),  # the default: any origin
    server={"host": "127.0.0.1"},
)


@pytest.fixture
def origin_server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(CONFIG)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "https://APP.Example.com:443",
        "https://eu.example.org",
        "https://a.b.example.org",
        "http://localhost:3000",
    ],
)
def test_an_allowed_origin_connects(
    origin_server: RunningServer, make_driver: Callable[..., Driver], origin: str
) -> None:
    js = make_driver(origin_server, env={"DRIVER_ORIGIN": origin})
    client = js.client("browser")
    client.subscribe("news")
    assert client.find(type="pusher_error") == []


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "http://app.example.com",  # the scheme must match
        "https://app.example.com:8443",  # so must the port
        "https://example.org",  # *.example.org is its subdomains only
        "https://evilexample.org",
        "http://localhost:3001",
        "null",
    ],
)
def test_another_origin_is_refused_with_4009(
    origin_server: RunningServer, make_driver: Callable[..., Driver], origin: str
) -> None:
    js = make_driver(origin_server, env={"DRIVER_ORIGIN": origin})
    client = js.client("browser", wait=False)
    # The pusher:error answering the handshake is what pusher-js acts on.
    closed = client.wait_closed(4009)
    assert closed["error"]["error"]["data"] == {"code": 4009, "message": "Origin not allowed"}
    js.wait_for({"type": "ws_close", "code": 4009})
    client.assert_stopped()
    assert client.find(type="connected") == []


def test_an_app_without_a_list_takes_any_origin(
    origin_server: RunningServer, make_driver: Callable[..., Driver]
) -> None:
    js = make_driver(origin_server, env={"DRIVER_ORIGIN": "https://anywhere.example.net"})
    client = js.client("browser", "open-key", "open-secret", "2")
    client.subscribe("news")


def test_pusher_js_without_an_origin_is_not_refused(
    origin_server: RunningServer, make_driver: Callable[..., Driver]
) -> None:
    js = make_driver(origin_server)  # Node's WebSocket sends no Origin of its own
    client = js.client("native")
    client.subscribe("news")
    assert client.find(type="pusher_error") == []


def test_raw_sockets_without_and_with_an_origin(origin_server: RunningServer) -> None:
    async def run() -> None:
        ws = await ws_connect(origin_server.ws())
        assert "." in await established(ws)
        await ws.close()

        refused = await ws_connect(
            origin_server.ws(), additional_headers={"Origin": "https://evil.example.com"}
        )
        assert await recv_json(refused) == {
            "event": "pusher:error",
            "data": {"code": 4009, "message": "Origin not allowed"},
        }
        await refused.wait_closed()
        assert refused.close_code == 4009

    asyncio.run(run())
