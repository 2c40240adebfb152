"""A raw WebSocket whose every frame is kept in order as it comes, for tests that wait for
some frames and then count all of them (a frame that came twice, or never)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

TIMEOUT = 10.0


class Recorder:
    """Reads ``ws`` in a task from creation on; ``frames`` holds each decoded frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            self.frames.append(json.loads(raw))
            self._changed.set()

    async def wait_for(self, check: Callable[[], object], timeout: float = TIMEOUT) -> None:
        """Until ``check()`` holds, re-checked at each frame; TimeoutError after ``timeout``."""

        async def waiting() -> None:
            while not check():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(waiting(), timeout)

    def events(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        """The frames of event ``name``, from index ``since`` on."""
        return [f for f in self.frames[since:] if f.get("event") == name]

    async def close(self) -> None:
        await self.ws.close()
        await self.task
