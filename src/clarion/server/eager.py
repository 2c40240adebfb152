"""Run a coroutine at once, and give it a task only if it really has to wait.

With the in-memory state nearly every request and message completes without suspending;
this spares the event loop a task per request. A clustered state suspends on network
round trips and then continues as an ordinary task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_eagerly(
    coro: Coroutine[Any, Any, T], done: Callable[[T], None] | None = None, eager: bool = True
) -> asyncio.Task[T] | None:
    """Step ``coro`` now. If it finished, call ``done`` with its result and return None;
    otherwise return the task that finishes it (``done`` is then called from the task).
    Exceptions of the first step propagate to the caller.

    Pass ``eager=False`` when the coroutine may use ``asyncio.timeout`` (which needs a
    current task, as redis-py's does): it then always runs as a task.
    """
    if not eager:
        task = asyncio.ensure_future(coro)
        if done is not None:
            task.add_done_callback(lambda t: done(t.result()) if not t.cancelled() else None)
        return task
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        if done is not None:
            done(stop.value)
        return None
    task = asyncio.ensure_future(_resume(coro, pending))
    if done is not None:
        task.add_done_callback(lambda t: done(t.result()) if not t.cancelled() else None)
    return task


async def _resume(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    """Drive a coroutine that has already suspended once on ``pending``."""
    while True:
        try:
            if pending is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                # What asyncio.Task does with a yielded future: wait for it, then resume.
                pending._asyncio_future_blocking = False
                await asyncio.wait([pending])
            pending = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
