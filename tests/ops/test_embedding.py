"""``clarion.Server``: Clarion embedded in another program's event loop, with the TOML
file's settings as keyword arguments, started and stopped as often as wanted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
import pusher
import pytest
from websockets.asyncio.client import connect

import clarion
from clarion.config import ConfigError

APP = {"id": "1", "key": "embedded-key", "secret": "embedded-secret"}


async def _receive_one(server: clarion.Server, channel: str) -> dict[str, Any]:
    """Subscribe a WebSocket client, publish with the SDK, and return what it received."""
    url = f"{server.ws_url}/app/{APP['key']}?protocol=7&client=js&version=8.6.0"
    async with connect(url) as ws:
        established = json.loads(await ws.recv())
        assert established["event"] == "pusher:connection_established"
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"
        sdk = pusher.Pusher(
            app_id=APP["id"], key=APP["key"], secret=APP["secret"], host=server.host,
            port=server.port, ssl=False,
        )  # fmt: skip
        await asyncio.to_thread(sdk.trigger, channel, "greeting", {"hello": "world"})
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return message


def test_started_and_stopped_twice_in_one_process() -> None:
    async def main() -> None:
        server = clarion.Server(port=0, apps=[APP])
        for round in range(2):
            async with server:
                assert server.running and server.port > 0 and server.host == "127.0.0.1"
                message = await _receive_one(server, f"news-{round}")
                assert message["event"] == "greeting"
                assert json.loads(message["data"]) == {"hello": "world"}
            assert not server.running
            with pytest.raises(OSError):
                await asyncio.open_connection(server.host, server.port)
        # By hand, a second Server object in the same process (metrics registry, state).
        other = clarion.Server(port=0, apps=[APP], webhooks={"timeout": 2.0})
        await other.start()
        try:
            async with httpx.AsyncClient() as client:
                assert (await client.get(other.http_url + "/up")).status_code == 200
        finally:
            await other.stop()
        await other.stop()  # stopping a stopped server does nothing

    asyncio.run(main())


def test_settings_are_checked_like_the_config_file() -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        clarion.Server(port=70000, apps=[APP])
    with pytest.raises(ConfigError, match=r"apps\[0\]"):
        clarion.Server(apps=[{"id": "1", "key": "k"}])
    with pytest.raises(ConfigError, match="unknown field"):
        clarion.Server(prot=0, apps=[APP])
    with pytest.raises(ConfigError, match=r"cluster\.adapter"):
        clarion.Server(apps=[APP], cluster={"adapter": "carrier-pigeon"})
    with pytest.raises(TypeError, match="apps="):
        clarion.Server(port=0)


def test_metrics_are_off_unless_asked_for() -> None:
    assert not clarion.Server(apps=[APP]).settings.metrics.enabled
    asked = clarion.Server(apps=[APP], metrics={"port": 0})
    assert asked.settings.metrics.enabled and asked.settings.metrics.port == 0


def test_metrics_asked_for_survive_a_restart() -> None:
    async def main() -> None:
        server = clarion.Server(port=0, apps=[APP], metrics={"port": 0})
        for _ in range(2):
            async with server, httpx.AsyncClient() as client:
                assert server.node is not None and server.node._metrics_server is not None
                host, port = server.node._metrics_server.server_address[:2]
                reply = await client.get(f"http://{host}:{port}/metrics")
                assert reply.status_code == 200 and "clarion_connections" in reply.text

    asyncio.run(main())


def test_a_port_in_use_fails_the_start_and_leaves_it_stopped() -> None:
    async def main() -> None:
        async with clarion.Server(port=0, apps=[APP]) as first:
            second = clarion.Server(port=first.port, apps=[APP])
            with pytest.raises(OSError):
                await second.start()
            assert not second.running

    asyncio.run(main())


def test_import_clarion_stays_light() -> None:
    code = "import sys, clarion; print('clarion.server.node' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
