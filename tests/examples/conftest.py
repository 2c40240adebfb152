"""The example chat (examples/chat) served for real: uvicorn on a socket of its own, in a
background thread; with the default settings its lifespan starts the embedded Clarion on
a free port."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.paths import NODE_MODULES
from tests.support.polling import until

# The same pinned pusher-js (8.6.0) as examples/chat/package.json, from tests/js's npm ci.
PUSHER_JS = NODE_MODULES / "pusher-js" / "dist" / "web" / "pusher.min.js"


@dataclass
class Chat:
    base: str  # http://127.0.0.1:PORT
    app: Any  # the FastAPI application (its state: pusher client, webhook log)


@contextmanager
def serving_chat(**settings: Any) -> Iterator[Chat]:
    """The chat with these :class:`ChatSettings` (an embedded Clarion on a free port
    unless told otherwise), until the block ends."""
    import uvicorn

    from examples.chat.app import ChatSettings, create_app

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    defaults = ChatSettings(
        clarion_port=0, backend_url=f"http://127.0.0.1:{port}", pusher_js=PUSHER_JS
    )
    app = create_app(dataclasses.replace(defaults, **settings))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        until(lambda: server.started or not thread.is_alive(), timeout=15, what="the chat")
        assert server.started, "the chat did not start (see the log above)"
        yield Chat(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        listener.close()


@pytest.fixture(scope="module")
def chat() -> Iterator[Chat]:
    with serving_chat() as running:
        yield running
