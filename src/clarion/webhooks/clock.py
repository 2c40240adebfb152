"""The outbox's sense of time: the wall clock and timers, behind one small protocol.

The outbox, the holds and the deliveries ask a :class:`Clock` for the time and for
timers instead of the event loop, so that tests drive them with a fake clock (advance
it, and the holds release, the batches flush, the retries come due) without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds: a request's ``time_ms`` and a job's retry window (a
        durable job carries its first attempt's time to other nodes and restarts)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now, unless cancelled."""
        ...


class LoopClock:
    """The real clock: ``time.time`` and the running event loop's timers."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)
