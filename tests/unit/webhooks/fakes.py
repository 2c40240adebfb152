"""A clock the test moves by hand, and a receiver that records what it is sent."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

HANG = "hang"  # a scripted answer: the request never completes


@dataclass(order=True)
class FakeTimer:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True

    def __hash__(self) -> int:
        return self.order


class FakeClock:
    """Wall time that only moves in :meth:`advance`, which fires due timers in order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.time = start
        self._timers: list[FakeTimer] = []
        self._order = itertools.count()
        self.added = asyncio.Event()  # set by each call_later (clear it to wait for one)
        self.last: FakeTimer | None = None

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.time + delay, next(self._order), callback)
        heapq.heappush(self._timers, timer)
        self.last = timer
        self.added.set()
        return timer

    def pending(self) -> int:
        return sum(not timer.cancelled for timer in self._timers)

    def advance(self, seconds: float) -> None:
        until = self.time + seconds
        while self._timers and self._timers[0].when <= until:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.time = timer.when
                timer.callback()
        self.time = until


@dataclass
class Request:
    url: str
    body: bytes
    headers: dict[str, str]


class FakePoster:
    """Records each request; answers from ``script`` (None: taken, text: an error,
    HANG: never), then None."""

    def __init__(self, *script: str | None) -> None:
        self.script: deque[str | None] = deque(script)
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.closed = False

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        self.requests.put_nowait(Request(url, body, headers))
        answer = self.script.popleft() if self.script else None
        if answer == HANG:
            await asyncio.Event().wait()
        return answer

    async def aclose(self) -> None:
        self.closed = True
