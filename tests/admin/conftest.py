"""A server with the admin console on (a port the OS picks), shared by this directory,
and a headless Chromium for the browser tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.browser import launched_browser
from tests.support.config import OTHER_APP, app, build_config
from tests.support.polling import until
from tests.support.server import RunningServer, start_server

TOKEN = "admin-token-for-the-tests-0123456789"
CONFIG = build_config(
    app(client_events=True, name="Main app"),
    OTHER_APP,
    server={"host": "127.0.0.1"},
    admin={"host": "127.0.0.1", "port": 0, "token": TOKEN},
)
_ADMIN = re.compile(r"Admin console: (http://[\d.]+:\d+)/admin/ \(sign in")


@dataclass
class Admin:
    server: RunningServer
    base: str  # http://127.0.0.1:PORT
    token: str


def console_of(running: RunningServer) -> Admin:
    """The admin console of a server started with an ``[admin]`` token, once announced."""
    found: list[re.Match[str]] = []

    def announced() -> bool:
        found.extend(m for line in running.output if (m := _ADMIN.search(line)))
        return bool(found)

    until(announced, what="the admin console's URL")
    # A configured token is not printed.
    assert not any(TOKEN in line for line in running.output)
    return Admin(running, found[0].group(1), TOKEN)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    running = start_server(tmp_path_factory.mktemp("admin"), CONFIG)
    yield console_of(running)
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_browser()
