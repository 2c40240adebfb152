"""RedisLink.guarded: the one way to fall back to this node's view when Redis fails.

No Redis is contacted: the link is never connected, its ``up`` flag is set by hand.
"""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import ConnectionError as RedisConnectionError

from clarion.cluster.redis.link import RedisLink, text, texts


def _link() -> RedisLink:
    return RedisLink("redis://127.0.0.1:1", "test")


def test_guarded_returns_the_call_while_the_link_is_up() -> None:
    async def main() -> None:
        link = _link()
        link.up = True

        async def call() -> str:
            return "redis"

        async def fallback() -> str:
            raise AssertionError("no fallback while Redis answers")

        assert await link.guarded(call, fallback) == "redis"
        assert link.up

    asyncio.run(main())


def test_a_redis_failure_marks_the_link_down_and_falls_back() -> None:
    async def main() -> None:
        link = _link()
        link.up = True
        calls: list[str] = []

        async def call() -> str:
            calls.append("call")
            raise RedisConnectionError("gone")

        async def fallback() -> str:
            return "local"

        assert await link.guarded(call, fallback) == "local"
        assert not link.up
        # Down: the call is not even tried, and without a fallback the answer is None.
        assert await link.guarded(call) is None
        assert calls == ["call"]

    asyncio.run(main())


def test_an_os_error_is_a_redis_failure_but_other_errors_propagate() -> None:
    async def main() -> None:
        link = _link()
        link.up = True

        async def refused() -> int:
            raise ConnectionRefusedError

        assert await link.guarded(refused) is None
        assert not link.up

        link.up = True

        async def bug() -> int:
            raise ValueError("a bug, not an outage")

        try:
            await link.guarded(bug)
        except ValueError:
            pass
        else:
            raise AssertionError("a bug must not read as an outage")
        assert link.up

    asyncio.run(main())


def test_replies_decode_to_text() -> None:
    assert text(b"abc") == "abc" and text("abc") == "abc"
    assert texts([b"a", b"b\xc3\xa9"]) == ["a", "bé"]
    assert texts(["a", "b"]) == ["a", "b"]
    assert texts([]) == []


def test_the_health_ping_has_an_absolute_timeout() -> None:
    """A frozen Redis accepts the PING and never answers: the ping fails within the
    link's timeout instead of redis-py's 5 s socket timeout."""

    class Frozen:
        async def ping(self) -> bool:
            await asyncio.Event().wait()
            return True

    async def main() -> None:
        link = RedisLink("redis://127.0.0.1:1", "test", timeout=0.1)
        link.client = Frozen()  # type: ignore[assignment]
        started = time.monotonic()
        try:
            await link._ping()
        except TimeoutError as exc:
            assert "0.1 s" in str(exc)
        else:
            raise AssertionError("a ping nobody answers must fail")
        assert time.monotonic() - started < 0.5

    asyncio.run(main())
