"""Fixtures for the integration tests: a pusher-js driver and the official Python SDK.

All tests share the session's Clarion server (tests/conftest.py), so every test names its
channels with its own ``uid`` and never depends on what other tests left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pusher
import pytest

from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


@pytest.fixture
def js(server: RunningServer, make_driver: Callable[[RunningServer], Driver]) -> Driver:
    """A fresh node driver per test, talking to the session's server."""
    return make_driver(server)


@pytest.fixture
def uid() -> str:
    """A suffix that makes this test's channel and event names its own."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def pusher_client(server: RunningServer) -> pusher.Pusher:
    """The PyPI ``pusher`` SDK, configured as the HTTP API guide does, for app 1."""
    return python_sdk(server)
