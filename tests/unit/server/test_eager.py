"""run_eagerly: a coroutine that never waits finishes in the call, with no task; one that
waits continues as a task; a failure of the first step reaches the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clarion.server.eager import run_eagerly


async def _value(value: int) -> int:
    return value


async def _nested(value: int) -> int:
    # Awaits that do not suspend (as the in-memory state's) stay in the same step.
    return await _value(value) + await _value(1)


async def _wait_for(future: asyncio.Future[int]) -> int:
    return await future + 1


async def _fail() -> int:
    raise ValueError("first step")


def _run(main: Any) -> Any:
    return asyncio.run(main())


def test_completes_in_the_call_without_a_task() -> None:
    async def main() -> None:
        results: list[int] = []
        tasks_before = asyncio.all_tasks()
        assert run_eagerly(_nested(41), results.append) is None
        assert results == [42]  # before the call returned, no loop turn needed
        assert asyncio.all_tasks() == tasks_before

    _run(main)


def test_needs_no_event_loop_when_nothing_waits() -> None:
    results: list[int] = []
    assert run_eagerly(_value(7), results.append) is None
    assert results == [7]


def test_falls_back_to_a_task_when_the_coroutine_waits() -> None:
    async def main() -> None:
        results: list[int] = []
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = run_eagerly(_wait_for(future), results.append)
        assert isinstance(task, asyncio.Task)
        assert results == []  # still waiting on the future
        future.set_result(9)
        assert await task == 10
        await asyncio.sleep(0)  # done callbacks run on the loop's next turn
        assert results == [10]

    _run(main)


def test_a_bare_yield_gives_the_loop_one_turn_then_continues() -> None:
    async def yields() -> str:
        await asyncio.sleep(0)
        return "after the turn"

    async def main() -> None:
        results: list[str] = []
        task = run_eagerly(yields(), results.append)
        assert task is not None
        assert await task == "after the turn"

    _run(main)


def test_an_exception_of_the_first_step_reaches_the_caller() -> None:
    results: list[int] = []
    with pytest.raises(ValueError, match="first step"):
        run_eagerly(_fail(), results.append)
    assert results == []


def test_an_exception_after_waiting_is_the_task_s() -> None:
    async def fails_later(future: asyncio.Future[int]) -> int:
        await future
        raise RuntimeError("later")

    async def main() -> None:
        results: list[int] = []
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = run_eagerly(fails_later(future), results.append)
        assert task is not None
        future.set_result(0)
        with pytest.raises(RuntimeError, match="later"):
            await task
        assert results == []

    _run(main)


def test_not_eager_always_runs_a_task() -> None:
    async def main() -> None:
        results: list[int] = []
        task = run_eagerly(_value(3), results.append, eager=False)
        assert isinstance(task, asyncio.Task)
        assert results == []  # not even started yet
        assert await task == 3
        await asyncio.sleep(0)
        assert results == [3]

    _run(main)
