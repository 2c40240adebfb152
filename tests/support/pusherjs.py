"""Drive real pusher-js clients (and Laravel Echo, and the Node ``pusher`` SDK) from pytest.

:class:`Driver` spawns ``node tests/js/driver.js`` and talks to it in JSON lines: commands
on its stdin, reports on its stdout. A reader thread collects every report in order; tests
*wait* for the report they expect (every wait has a timeout) instead of sleeping.

Absence is proven by order, never by waiting: to show that a client did not get event A,
publish a later event B to the same channel and wait for B. Frames of one connection
arrive in the order the server wrote them and the driver reports them in that order, so
once B is reported, A would have been reported before it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import JS_DIR, NODE_MODULES

DRIVER = JS_DIR / "driver.js"

# Long enough for a loaded CI machine, short enough that a missing event fails fast.
TIMEOUT = 5.0

Report = dict[str, Any]
Predicate = Callable[[Report], bool]


class DriverError(AssertionError):
    """The driver answered a command with an error, crashed, or a wait timed out."""


def _matches(report: Report, fields: dict[str, Any]) -> bool:
    return all(report.get(key) == value for key, value in fields.items())


class Driver:
    """One node process holding any number of named pusher-js clients.

    ``env={"DRIVER_ORIGIN": "https://app.example.com"}`` makes every socket of the driver
    send that ``Origin`` header, as a browser on that page does.
    """

    def __init__(
        self, host: str, port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        node = shutil.which("node")
        if node is None or not (NODE_MODULES / "pusher-js").is_dir():
            # A missing tool is a failure, not a skip: `make test` installs both.
            pytest.fail("node and tests/js/node_modules are needed (make setup installs them)")
        self.host = host
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [node, str(DRIVER)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self.reports: list[Report] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.wait_for({"type": "ready"}, timeout=15)
        except BaseException:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------------------

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                report = {"type": "garbage", "text": line}
            report.setdefault("received_at", time.monotonic())
            with self._cond:
                self.reports.append(report)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def mark(self) -> int:
        """The index of the next report: pass it as ``since`` to ignore older ones."""
        with self._cond:
            return len(self.reports)

    def find(self, match: dict[str, Any] | Predicate, since: int = 0) -> list[Report]:
        """Every report received so far (from index ``since``) that matches."""
        predicate = match if callable(match) else (lambda r: _matches(r, match))
        with self._cond:
            return [r for r in self.reports[since:] if predicate(r)]

    def wait_for(
        self,
        match: dict[str, Any] | Predicate,
        *,
        since: int = 0,
        timeout: float = TIMEOUT,
        what: str | None = None,
    ) -> Report:
        """The first report (from index ``since``) that matches; wait for it if needed."""
        predicate = match if callable(match) else (lambda r: _matches(r, match))
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self.reports):
                    report = self.reports[index]
                    index += 1
                    if report.get("type") == "crash":
                        raise DriverError(f"driver crashed: {report['error']}")
                    if predicate(report):
                        return report
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        raise DriverError(self._explain(what or repr(match), since, timeout))

    def wait_count(
        self,
        match: dict[str, Any] | Predicate,
        count: int,
        *,
        since: int = 0,
        timeout: float = TIMEOUT,
        what: str | None = None,
    ) -> list[Report]:
        """The first ``count`` reports (from index ``since``) that match; wait for them."""
        predicate = match if callable(match) else (lambda r: _matches(r, match))
        found: list[Report] = []

        def counting(report: Report) -> bool:
            if predicate(report):
                found.append(report)
            return len(found) >= count

        self.wait_for(counting, since=since, timeout=timeout, what=what or f"{count} x {match!r}")
        return found

    def _explain(self, what: str, since: int, timeout: float) -> str:
        with self._cond:
            recent = self.reports[since:][-25:]
        state = "exited" if self.process.poll() is not None else "running"
        log = ""
        with contextlib.suppress(OSError):
            self._log.flush()
            log = self.log_path.read_text()[-3000:]
        lines = "\n".join(json.dumps(r) for r in recent)
        return (
            f"no report matching {what} within {timeout}s (driver {state}).\n"
            f"Last reports:\n{lines}\nDriver stderr (tail):\n{log}"
        )

    def request(self, cmd: str, timeout: float = TIMEOUT, **fields: Any) -> Any:
        """Send one command and return its ``result``; raise if the driver says no."""
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "cmd": cmd, **fields})
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise DriverError(f"driver is gone: {exc}") from exc
        reply = self.wait_for(
            {"type": "reply", "id": request_id}, timeout=timeout, what=f"reply to {cmd}"
        )
        if not reply["ok"]:
            raise DriverError(f"{cmd} failed in the driver: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        """End the driver: EOF on stdin disconnects every client; kill it if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)
        self._reader.join(3)
        self._log.close()

    # --- pusher-js clients --------------------------------------------------------------

    def client(
        self,
        name: str,
        key: str = "app-key",
        secret: str = "app-secret",
        app_id: str = "1",
        *,
        raw: bool = False,
        wait: bool = True,
        master_key: str | None = None,
        host: str | None = None,
        port: int | None = None,
        tls: bool = False,
    ) -> JsClient:
        """A new pusher-js client; by default wait until it is connected.

        ``secret`` is what its channel authoriser signs with (the Node SDK's
        ``authorizeChannel``); ``raw`` also reports every text frame as received;
        ``master_key`` (base64) lets the authoriser answer ``private-encrypted-`` channels.
        ``host`` and ``port`` connect it to another server than the driver's (another
        node of a cluster, say).
        """
        since = self.mark()
        self.request(
            "connect",
            client=name,
            key=key,
            secret=secret,
            app_id=app_id,
            host=host or self.host,
            port=port or self.port,
            raw=raw,
            master_key=master_key,
            tls=tls,
        )
        client = JsClient(self, name, since)
        if wait:
            client.socket_id = self._connected(name, since)
        return client

    def echo(
        self,
        name: str,
        key: str = "app-key",
        secret: str = "app-secret",
        app_id: str = "1",
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> EchoClient:
        """A new Laravel Echo instance (broadcaster ``pusher``); wait until it is connected.

        Echo builds its own pusher-js client from the options; its channel authoriser
        signs with ``secret`` as for :meth:`client`.
        """
        since = self.mark()
        self.request(
            "echo_connect",
            client=name,
            key=key,
            secret=secret,
            app_id=app_id,
            host=host or self.host,
            port=port or self.port,
        )
        client = EchoClient(self, name, since)
        client.socket_id = self._connected(name, since)
        return client

    def _connected(self, name: str, since: int) -> str:
        connected = self.wait_for(
            {"type": "connected", "client": name}, since=since, what=f"{name} connected"
        )
        socket_id: str = connected["socket_id"]
        return socket_id

    # --- the Node server SDK ---------------------------------------------------------------

    def node_sdk(
        self,
        method: str,
        *args: Any,
        app_id: str = "1",
        key: str = "app-key",
        secret: str = "app-secret",
        master_key: str | None = None,
    ) -> dict[str, Any]:
        """Call ``new Pusher({...})[method](...args)``; return ``{status, body}``.

        On an HTTP error the SDK's RequestError is returned as ``{status, body, error}``.
        """
        app = {
            "appId": app_id,
            "key": key,
            "secret": secret,
            "host": self.host,
            "port": self.port,
            "masterKey": master_key,
        }
        result: dict[str, Any] = self.request("sdk", app=app, method=method, args=list(args))
        return result


class JsClient:
    """One named pusher-js instance inside the driver."""

    def __init__(self, driver: Driver, name: str, since: int) -> None:
        self.driver = driver
        self.name = name
        self.since = since
        self.socket_id: str | None = None

    def __repr__(self) -> str:
        return f"JsClient({self.name!r}, socket_id={self.socket_id!r})"

    def wait(self, timeout: float = TIMEOUT, since: int | None = None, **fields: Any) -> Report:
        """Wait for a report of this client whose fields equal ``fields``."""
        return self.driver.wait_for(
            {"client": self.name, **fields},
            since=self.since if since is None else since,
            timeout=timeout,
            what=f"{self.name}: {fields}",
        )

    def wait_count(self, count: int, since: int | None = None, **fields: Any) -> list[Report]:
        """Wait for ``count`` reports of this client whose fields equal ``fields``."""
        return self.driver.wait_count(
            {"client": self.name, **fields},
            count,
            since=self.since if since is None else since,
            what=f"{self.name}: {count} x {fields}",
        )

    def find(self, since: int | None = None, **fields: Any) -> list[Report]:
        return self.driver.find(
            {"client": self.name, **fields}, since=self.since if since is None else since
        )

    def subscribe(
        self,
        channel: str,
        *,
        presence: dict[str, Any] | None = None,
        secret: str | None = None,
        auth_response: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Report | None:
        """Subscribe; by default wait for (and return) ``pusher:subscription_succeeded``.

        ``presence`` is the presence data the authoriser signs (``{user_id, user_info}``),
        ``secret`` overrides the signing secret for this channel, and ``auth_response`` is a
        ready-made auth response handed to pusher-js as is.
        """
        since = self.driver.mark()
        self.driver.request(
            "subscribe",
            client=self.name,
            channel=channel,
            presence=presence,
            secret=secret,
            auth_response=auth_response,
        )
        if not wait:
            return None
        return self.wait(type="subscription_succeeded", channel=channel, since=since)

    def unsubscribe(self, channel: str) -> None:
        self.driver.request("unsubscribe", client=self.name, channel=channel)

    def bind(self, channel: str, event: str) -> None:
        """Bind ``event`` on ``channel`` through ``channel.bind``: reports ``bound``."""
        self.driver.request("bind", client=self.name, channel=channel, event=event)

    def wait_event(self, channel: str, event: str, since: int | None = None) -> Report:
        """Wait for an event pusher-js emitted on ``channel`` (any bind_global event)."""
        return self.wait(type="event", channel=channel, event=event, since=since)

    def wait_frame(self, event: str, channel: str | None = None) -> dict[str, Any]:
        """The decoded text frame (client made with ``raw=True``) carrying ``event``."""

        def is_frame(report: Report) -> bool:
            if report.get("type") != "raw" or report.get("client") != self.name:
                return False
            frame = json.loads(report["text"])
            return bool(frame.get("event") == event and frame.get("channel") == channel)

        report = self.driver.wait_for(
            is_frame, since=self.since, what=f"{self.name}: raw frame {event} on {channel}"
        )
        frame: dict[str, Any] = json.loads(report["text"])
        return frame

    def events(self, channel: str, event: str | None = None) -> list[Report]:
        fields: dict[str, Any] = {"type": "event", "channel": channel}
        if event is not None:
            fields["event"] = event
        return self.find(**fields)

    def inspect(self, channel: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.driver.request("inspect", client=self.name, channel=channel)
        return result

    # --- user sign-in (pusher.signin, pusher.user) ---------------------------------------

    def signin(
        self,
        user_data: dict[str, Any] | None = None,
        *,
        secret: str | None = None,
        auth_response: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Report | None:
        """``pusher.signin()``; by default wait until pusher-js is signed in.

        The user authenticator signs ``user_data`` with the Node SDK's ``authenticateUser``
        (with ``secret`` if given, else the client's secret), or hands pusher-js the
        ready-made ``auth_response``. Waiting means: pusher-js settled the sign-in with
        this user (``signin_done``) and its ``#server-to-user-`` channel is subscribed.
        """
        since = self.driver.mark()
        self.driver.request(
            "signin",
            client=self.name,
            user_data=user_data,
            secret=secret,
            auth_response=auth_response,
        )
        if not wait:
            return None
        done = self.wait(type="signin_done", since=since)
        if done["user_data"] is None:
            raise AssertionError(f"{self.name}: pusher-js did not sign in: {done}")
        self.wait(type="user_subscribed", since=since)
        return done

    def user_bind(self, *events: str) -> None:
        """``pusher.user.bind(event)`` for each event: reports ``user_event``."""
        for event in events:
            self.driver.request("user_bind", client=self.name, event=event)

    def user_events(self, event: str | None = None, since: int | None = None) -> list[Report]:
        fields: dict[str, Any] = {"type": "user_event"}
        if event is not None:
            fields["event"] = event
        return self.find(since=since, **fields)

    def bind_global(self) -> None:
        """``pusher.bind_global``: reports every global event as ``global``."""
        self.driver.request("bind_global", client=self.name)

    def watchlist(self, since: int | None = None) -> list[tuple[str, list[str]]]:
        """The ``pusher.user.watchlist`` events so far, as (name, user_ids)."""
        return [
            (r["name"], r["entry"]["user_ids"]) for r in self.find(since=since, type="watchlist")
        ]

    # --- client events ------------------------------------------------------------------

    def trigger(self, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """``channel.trigger(event, data)``: ``{"sent": bool}`` or ``{"thrown": error}``."""
        return self.trigger_many(channel, [(event, data)])[0]

    def trigger_many(self, channel: str, events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """``channel.trigger`` for every (event, data), back to back in one go."""
        result: list[dict[str, Any]] = self.driver.request(
            "trigger",
            client=self.name,
            channel=channel,
            events=[{"event": e, "data": d} for e, d in events],
        )
        return result

    def send_event(self, event: str, data: Any, channel: str | None = None) -> None:
        """``pusher.send_event``: a frame pusher-js's channel objects would not send."""
        self.driver.request("send_event", client=self.name, event=event, data=data, channel=channel)

    def details(self, channel: str | None = None) -> dict[str, Any]:
        """pusher-js's ``user.user_data``, its server-to-user channel, a subscriptionCount."""
        result: dict[str, Any] = self.driver.request("details", client=self.name, channel=channel)
        return result

    def wait_closed(self, code: int, since: int | None = None) -> Report:
        """Wait until pusher-js acted on close code ``code``.

        pusher-js reports the close it acts on (a close frame, or a ``pusher:error`` that
        answered the handshake) as ``{type: "WebSocketError", error: {data: {code}}}`` on
        ``connection.bind('error')``; a ``pusher:error`` frame after the handshake is a
        plain ``PusherError`` and changes nothing.
        """

        def closed(report: Report) -> bool:
            if report.get("client") != self.name or report.get("type") != "error":
                return False
            error = report.get("error") or {}
            inner = error.get("error") or {}
            data = inner.get("data") if isinstance(inner, dict) else None
            return bool(
                error.get("type") == "WebSocketError"
                and isinstance(data, dict)
                and data.get("code") == code
            )

        return self.driver.wait_for(
            closed,
            since=self.since if since is None else since,
            what=f"{self.name}: pusher-js acting on close code {code}",
        )

    def assert_stopped(self) -> None:
        """pusher-js is ``disconnected`` with nothing scheduled: it will not reconnect."""
        state = self.inspect()
        keys = ("state", "retry_pending", "connecting", "has_connection")
        assert {k: state[k] for k in keys} == {
            "state": "disconnected",
            "retry_pending": False,
            "connecting": False,
            "has_connection": False,
        }

    def disconnect(self) -> None:
        """``pusher.disconnect()``: closes the socket; wait for state ``disconnected``."""
        since = self.driver.mark()
        self.driver.request("disconnect", client=self.name)
        self.wait(type="state", current="disconnected", since=since)


EchoCall = str | tuple[str, str] | tuple[str, str, Any]


class EchoClient(JsClient):
    """One Laravel Echo instance inside the driver (its pusher-js client is reachable with
    the :class:`JsClient` methods too, e.g. :meth:`inspect`)."""

    def channel(self, name: str) -> EchoChannel:
        """``Echo.channel(name)``: the public channel ``name``."""
        return EchoChannel(self, "channel", name)

    def private(self, name: str) -> EchoChannel:
        """``Echo.private(name)``: the channel ``private-{name}``."""
        return EchoChannel(self, "private", name)

    def join(self, name: str, presence: dict[str, Any]) -> EchoChannel:
        """``Echo.join(name)``: ``presence-{name}``, authorised with ``presence`` data."""
        return EchoChannel(self, "join", name, presence)

    def leave(self, name: str) -> None:
        """``Echo.leave(name)``: ``name`` and its private- and presence- variants."""
        self.driver.request("echo_leave", client=self.name, channel=name)

    def echo_socket_id(self) -> str | None:
        """``Echo.socketId()``: what Echo sends as X-Socket-Id, for ``toOthers()``."""
        result: str | None = self.driver.request("echo_socket_id", client=self.name)
        return result


class EchoChannel:
    """An Echo channel object; each method calls Echo's method of the same name.

    The Echo channel (and so the pusher-js subscription) is created by the first call.
    Callbacks report ``{type: "echo", channel, method, event, ...}``; ``subscribed`` and
    ``error`` are always registered. Calls that must be in place before the subscription
    answers (``here``) go in the same :meth:`call` as the first one.
    """

    def __init__(
        self, client: EchoClient, kind: str, name: str, presence: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.kind = kind
        self.name = name
        self.presence = presence
        self.pusher_name = {"channel": "", "private": "private-", "join": "presence-"}[kind] + name

    def call(self, *calls: EchoCall) -> EchoChannel:
        """Each call is a method name, or (method, event), or (method, event, data)."""
        encoded = []
        for call in calls:
            parts = (call,) if isinstance(call, str) else call
            encoded.append(dict(zip(("method", "event", "data"), parts, strict=False)))
        self.client.driver.request(
            "echo",
            client=self.client.name,
            kind=self.kind,
            channel=self.name,
            presence=self.presence,
            calls=encoded,
        )
        return self

    def listen(self, event: str) -> EchoChannel:
        return self.call(("listen", event))

    def listen_for_whisper(self, event: str) -> EchoChannel:
        return self.call(("listenForWhisper", event))

    def whisper(self, event: str, data: Any) -> EchoChannel:
        return self.call(("whisper", event, data))

    def wait(self, method: str, since: int | None = None, **fields: Any) -> Report:
        """Wait for a report of this channel's ``method`` callback."""
        return self.client.wait(
            type="echo", channel=self.pusher_name, method=method, since=since, **fields
        )

    def reports(self, method: str, since: int | None = None, **fields: Any) -> list[Report]:
        return self.client.find(
            type="echo", channel=self.pusher_name, method=method, since=since, **fields
        )

    def wait_subscribed(self) -> Report:
        return self.wait("subscribed")
