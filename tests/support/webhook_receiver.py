"""A real HTTP server that receives webhooks for the tests, with scripted answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def names(self) -> list[str]:
        return [event["name"] for event in self.payload["events"]]


@dataclass
class Receiver:
    """Answers 200 unless a path has a script: a list of statuses, or "hang"."""

    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, path: str) -> int | str:
        script = self.scripts.get(path)
        if not script:
            return 200
        return script.pop(0) if len(script) > 1 else script[0]

    def record(self, item: Received) -> None:
        with self._changed:
            self.requests.append(item)
            self._changed.notify_all()

    def wait_for(
        self, check: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """Block until ``check(requests)`` holds (woken by each new request)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check(self.requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        "webhooks not received in time; got: "
                        + repr([(r.path, r.status, r.names) for r in self.requests])
                    )
                self._changed.wait(remaining)
            return list(self.requests)

    def events(self, path: str | None = None, ok_only: bool = True) -> list[dict[str, Any]]:
        return [
            event
            for r in list(self.requests)
            if (path is None or r.path == path) and (r.status == 200 or not ok_only)
            for event in r.payload["events"]
        ]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = receiver.answer(self.path)
                status = 200 if action == "hang" else int(action)
                receiver.record(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        0 if action == "hang" else status,
                        time.monotonic(),
                    )
                )
                if action == "hang":
                    receiver.release.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
