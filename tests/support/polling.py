"""Waiting for state that no frame or report announces (cleanup after a close, a key in
Redis, a log line): poll a check until it holds, or fail after a timeout."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Wait for server-side state that no frame announces (e.g. cleanup after a close).
    ``check`` may be a plain function or a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        met = check()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def until(check: Any, timeout: float = 5.0, what: str = "the condition") -> None:
    """``eventually`` for synchronous tests (an HTTP endpoint, a Redis key, a log line)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
