"""Fixtures every suite shares: the session's server, servers of a test's own, pusher-js
drivers and a webhook receiver. The machinery behind them is in :mod:`tests.support`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pusherjs import Driver
from tests.support.server import DEFAULT_CONFIG, RunningServer, start_server
from tests.support.webhook_receiver import Receiver, running_receiver


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("clarion"))
    yield running
    running.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(
        config: str = DEFAULT_CONFIG, env: dict[str, str] | None = None, **options: Any
    ) -> RunningServer:
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        running = start_server(sub, config, env, **options)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def make_driver(tmp_path: Path) -> Iterator[Callable[..., Driver]]:
    """Start pusher-js node drivers for any server (``make_driver(server, env=...)``); all
    are ended, with their clients, at teardown."""
    drivers: list[Driver] = []

    def make(target: RunningServer, env: dict[str, str] | None = None) -> Driver:
        log = tmp_path / f"driver{len(drivers)}.log"
        driver = Driver(target.host, target.port, log, env=env)
        drivers.append(driver)
        return driver

    try:
        yield make
    finally:
        for driver in drivers:
            driver.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a port of its own, answering 200 unless scripted."""
    yield from running_receiver()
