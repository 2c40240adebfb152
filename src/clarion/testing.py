"""``clarion.testing``: a pytest plugin that gives an application's tests a real Clarion.

Registered through the ``pytest11`` entry point, so installing Clarion is enough:

- ``clarion_server``: a server started in-process on a free port for the test, with one
  app and a webhook receiver (:class:`ClarionServer`);
- ``make_clarion_server(**app_settings)``: the same with the app's settings
  (``client_events=True``, ``max_connections=2``...); each call starts another server.

Each server runs on an event loop of its own in a background thread, so sync tests and
async tests (on any loop) use it alike. Nothing of the server is imported until a fixture
is used: the plugin costs nothing to test suites that do not.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from clarion.embedded import Server

__all__ = ["ClarionServer", "Subscription", "Webhooks"]

START_TIMEOUT = 10.0
_users = itertools.count(1)


class Webhooks:
    """The webhook events the server sent, as received by the built-in receiver, oldest
    first: each a dict like ``{"name": "channel_occupied", "channel": "my-channel"}``."""

    def __init__(self, key: str, secret: str) -> None:
        self._key, self._secret = key, secret
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._http: ThreadingHTTPServer | None = None
        # Requests whose X-Pusher-Key or X-Pusher-Signature was wrong (there should be none).
        self.bad_signatures = 0

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self._events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def names(self) -> list[str]:
        return [event["name"] for event in self.events]

    def wait_for(
        self, name: str, timeout: float = 5.0, channel: str | None = None
    ) -> dict[str, Any]:
        """The first event called ``name`` (on ``channel``, if given), waiting up to
        ``timeout`` seconds for it to arrive; AssertionError if it does not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self._events:
                    if event.get("name") == name and channel in (None, event.get("channel")):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {name!r} webhook within {timeout} s; received: "
                        + repr([(e.get("name"), e.get("channel")) for e in self._events])
                    )
                self._changed.wait(remaining)

    def clear(self) -> None:
        with self._changed:
            self._events.clear()

    # --- the receiver -----------------------------------------------------------------

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        from clarion.protocol.signing import sign

        if headers.get("x-pusher-key") != self._key or headers.get("x-pusher-signature") != sign(
            self._secret, body
        ):
            self.bad_signatures += 1
        try:
            events = json.loads(body)["events"]
        except (ValueError, KeyError, TypeError):
            return
        with self._changed:
            self._events.extend(event for event in events if isinstance(event, dict))
            self._changed.notify_all()

    def _start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver._record({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # A short poll: shutdown() waits for it, at the end of every test.
        serve = functools.partial(self._http.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, name="clarion-webhooks", daemon=True).start()
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/webhooks"

    def _stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


class Subscription:
    """A WebSocket client subscribed to one channel (see :meth:`ClarionServer.subscribe`)."""

    def __init__(self, connection: Any, channel: str, socket_id: str) -> None:
        self._ws = connection
        self.channel = channel
        self.socket_id = socket_id

    def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event on the connection as ``{"event", "channel", "data"}`` (``data``
        decoded from JSON when it is JSON text), answering the server's pings meanwhile;
        TimeoutError if none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = self._ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no event on {self.channel} within {timeout} s") from None
            message = _parse(raw)
            if message["event"] == "pusher:ping":
                self._ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
            elif not message["event"].startswith("pusher:"):
                return message

    def trigger(self, event: str, data: Any) -> None:
        """Send a client event (``client-...``) on the channel; the app needs
        ``client_events=True`` and the channel must be private or presence."""
        payload = data if isinstance(data, str) else json.dumps(data)
        self._ws.send(json.dumps({"event": event, "channel": self.channel, "data": payload}))


class ClarionServer:
    """A running Clarion with one app, for a test."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, webhooks: Webhooks):
        self._server = server
        self._loop = loop
        self.webhooks = webhooks
        app = server.settings.apps[0]
        self.app_id, self.key, self.secret = app.id, app.key, app.secret
        self.host, self.port = server.host, server.port
        self.http_url = server.http_url
        self.ws_url = server.ws_url
        self._stopped = False

    @property
    def pusher_kwargs(self) -> dict[str, Any]:
        """Arguments for the ``pusher`` SDK: ``pusher.Pusher(**clarion_server.pusher_kwargs)``."""
        return {
            "app_id": self.app_id,
            "key": self.key,
            "secret": self.secret,
            "host": self.host,
            "port": self.port,
            "ssl": False,
        }

    @property
    def pusher_js_options(self) -> dict[str, Any]:
        """Options for pusher-js: ``new Pusher(key, options)``."""
        return {
            "wsHost": self.host,
            "wsPort": self.port,
            "httpHost": self.host,
            "httpPort": self.port,
            "forceTLS": False,
            "enabledTransports": ["ws"],
            "disableStats": True,
            "cluster": "clarion",
        }

    def sign(self, message: str) -> str:
        """``key:signature`` over ``message`` (an auth token as the app's backend makes it)."""
        from clarion.protocol.signing import sign

        return f"{self.key}:{sign(self.secret, message)}"

    @contextmanager
    def subscribe(
        self, channel: str, user_id: str | None = None, user_info: dict[str, Any] | None = None
    ) -> Iterator[Subscription]:
        """Connect a WebSocket client subscribed to ``channel`` (private and presence
        subscriptions signed here; ``user_id`` is the presence member's id, one made up
        if not given), and close it on exit."""
        from websockets.sync.client import connect

        from clarion.cli_api import subscribe_frame

        url = f"{self.ws_url}/app/{self.key}?protocol=7&client=clarion-testing&version=1.0"
        with connect(url, open_timeout=5.0, close_timeout=1.0) as ws:
            established = _parse(ws.recv(timeout=5.0))
            if established["event"] != "pusher:connection_established":
                raise RuntimeError(f"connection refused: {established}")
            socket_id = established["data"]["socket_id"]
            member: dict[str, Any] = {"user_id": user_id or f"user-{next(_users)}"}
            if user_info is not None:
                member["user_info"] = user_info
            frame = subscribe_frame(self.key, self.secret, socket_id, channel, member)
            ws.send(json.dumps(frame))
            deadline = time.monotonic() + 5.0
            while True:
                reply = _parse(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if reply["event"] == "pusher_internal:subscription_succeeded":
                    break
                if reply["event"] in ("pusher:subscription_error", "pusher:error"):
                    raise RuntimeError(f"cannot subscribe to {channel}: {reply['data']}")
            yield Subscription(ws, channel, socket_id)

    def stop(self) -> None:
        """Stop the server (done by the fixture at the end of the test); once is enough."""
        if self._stopped:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop)
        try:
            future.result(START_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.webhooks._stop()


def _parse(raw: str | bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    data = message.get("data")
    if isinstance(data, str):
        with suppress(ValueError):
            data = json.loads(data)
    return {"event": message.get("event", ""), "channel": message.get("channel"), "data": data}


def start_clarion_server(**app_settings: Any) -> ClarionServer:
    """Start a Clarion with one app (``app_settings`` override the defaults: a random key
    and secret, webhooks sent at once to the built-in receiver) on a background thread."""
    from clarion.embedded import Server
    from clarion.protocol.webhooks import EVENT_TYPES

    app: dict[str, Any] = {
        "id": "1",
        "key": "key-" + secrets.token_hex(8),
        "secret": secrets.token_hex(16),
        # Tests should not wait for Pusher's delays before vacated/removed webhooks.
        "webhook_delay": 0,
        **app_settings,
    }
    webhooks = Webhooks(app["key"], app["secret"])
    app["webhooks"] = [
        *app.get("webhooks", []),
        {"url": webhooks._start(), "event_types": sorted(EVENT_TYPES)},
    ]
    try:
        server = Server(host="127.0.0.1", port=0, log_connections=False, apps=[app])
    except BaseException:
        webhooks._stop()
        raise
    loop = asyncio.new_event_loop()
    threading.Thread(target=_run_loop, args=(loop,), name="clarion-server", daemon=True).start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(START_TIMEOUT)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        webhooks._stop()
        raise
    return ClarionServer(server, loop, webhooks)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


@pytest.fixture
def make_clarion_server() -> Iterator[Callable[..., ClarionServer]]:
    """A factory: ``make_clarion_server(client_events=True)`` starts a Clarion whose app
    has those settings; every server it started is stopped after the test."""
    started: list[ClarionServer] = []

    def make(**app_settings: Any) -> ClarionServer:
        server = start_clarion_server(**app_settings)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def clarion_server(make_clarion_server: Callable[..., ClarionServer]) -> ClarionServer:
    """A real Clarion for this test, with one app and a webhook receiver."""
    return make_clarion_server()
