"""Holding back ``channel_vacated``, ``member_removed`` and ``user_offline``.

Each is held for the app's ``webhook_delay``; the opposite event arriving meanwhile
(``channel_occupied``, ``member_added``, ``user_online``) cancels both, so a page reload
does not flap. A hold also leaves a mark in the :class:`HeldMarks`: with the cluster's
marks the opposite event fired by another node cancels it too, and a release is sent
only if the cluster agrees the channel is still empty (the member gone, the user away).

Marks that live in this process (:class:`MemoryHeldMarks`) answer at once, so a hold,
a cancel and a release cost no await; the cluster's marks are applied in order, in
batches, by one task at a time. Timers come from an injected :class:`Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from clarion.cluster.interfaces import HeldKey, HeldMarks, MarkOp
from clarion.protocol.webhooks import WebhookEvent
from clarion.webhooks.clock import Clock, Timer
from clarion.webhooks.stores import MemoryHeldMarks

log = logging.getLogger("clarion.webhooks")

RECHECK = 1.0  # seconds between two checks of a held event while Redis is away

MarkDone = Callable[[bool | None], None]


def held_key(app_id: str, name: str, event: WebhookEvent) -> HeldKey:
    return HeldKey(app_id, name, str(event.get("channel", "")), str(event.get("user_id", "")))


@dataclass(slots=True)
class _Held:
    timer: Timer
    event: WebhookEvent
    token: str  # this hold's mark (a newer hold of the same event replaces it)


class Holds:
    """The events held back, their timers and their marks; ``send`` gets each event
    whose delay ran out uncancelled."""

    def __init__(
        self, marks: HeldMarks, clock: Clock, send: Callable[[HeldKey, WebhookEvent], None]
    ) -> None:
        self._marks = marks
        # Marks of this process answer synchronously; only the cluster's need a task.
        self._local = marks if isinstance(marks, MemoryHeldMarks) else None
        # Whether other nodes see the marks (and may hold what this node does not).
        self.shared = self._local is None
        self._clock = clock
        self._send = send
        self._held: dict[HeldKey, _Held] = {}
        self._token_prefix = secrets.token_hex(4) + "."
        self._tokens = itertools.count()
        self._ops: list[tuple[MarkOp, MarkDone | None]] = []
        self._applying: asyncio.Task[None] | None = None  # the task applying them
        self._idle = asyncio.Event()  # no batch of marks being applied
        self._idle.set()
        self._flushing = False  # shutdown: held events go out, checked or not

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, key: HeldKey, event: WebhookEvent, delay: float) -> None:
        """Hold ``event`` for ``delay`` seconds (a hold of the same key is replaced)."""
        previous = self._held.pop(key, None)
        if previous is not None:
            previous.timer.cancel()
        timer = self._clock.call_later(delay, lambda: self._release(key))
        token = f"{self._token_prefix}{next(self._tokens)}"
        self._held[key] = _Held(timer, event, token)
        self._mark(MarkOp("hold", key, seconds=delay, token=token), None)

    def cancel(self, key: HeldKey) -> bool:
        """The opposite event came: True if this node held ``key`` (neither is sent)."""
        held = self._held.pop(key, None) if self._held else None
        if held is None:
            return False
        held.timer.cancel()
        self._mark(MarkOp("take", key), None)  # after its hold: ops keep their order
        return True

    def take(self, key: HeldKey, then: Callable[[bool], None]) -> None:
        """The opposite event came and this node holds nothing: take the mark another
        node may have left; ``then(True)`` if there was one (the pair cancels out)."""
        self._mark(MarkOp("take", key), lambda taken: then(bool(taken)))

    def _release(self, key: HeldKey) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return

        def decided(send: bool | None) -> None:
            if send or (send is None and self._flushing):
                self._send(key, held.event)
            elif send is None and key not in self._held:  # (a newer hold decides)
                # Unknown yet: Redis is away, or just back and the other nodes may not
                # have registered their sockets again. Held on and asked again (a
                # node's own view during an outage is not the cluster's).
                timer = self._clock.call_later(RECHECK, lambda: self._release(key))
                self._held[key] = _Held(timer, held.event, held.token)

        self._mark(MarkOp("release", key, token=held.token), decided)

    # --- the marks ------------------------------------------------------------------

    def _mark(self, op: MarkOp, then: MarkDone | None) -> None:
        """Apply an operation on the marks; ``then`` gets its outcome."""
        if self._local is not None:
            result = self._local.apply_now(op)
            if then is not None:
                then(result)
            return
        # The cluster's: one task applies them in order, batched.
        self._ops.append((op, then))
        if self._applying is None:
            self._idle.clear()
            self._applying = asyncio.get_running_loop().create_task(self._apply())
            self._applying.add_done_callback(self._applied)

    async def _apply(self) -> None:
        try:
            while self._ops:
                batch, self._ops = self._ops, []
                results: list[bool | None] = [None] * len(batch)  # None: outcome unknown
                try:
                    results[:] = await self._marks.apply([op for op, _ in batch]) or results
                except Exception:
                    log.exception("webhook hold marks could not be applied")
                for (_, then), result in zip(batch, results, strict=True):
                    if then is not None:
                        then(result)
        finally:
            self._applying = None
            self._idle.set()

    @staticmethod
    def _applied(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook task failed", exc_info=task.exception())

    async def settled(self) -> None:
        """Return once every operation asked for so far is applied (and answered)."""
        await self._idle.wait()

    # --- shutdown ---------------------------------------------------------------------

    async def close(self, deadline: float) -> None:
        """Send every held event now, unless the opposite event takes its mark first."""
        if self.shared and self._held:
            # In a cluster the sockets closed by a drain come back through other nodes:
            # the held events run their course (up to the deadline), so that a client
            # that moves within the delay cancels them as on a running node.
            until = time.monotonic() + deadline
            while self._held and time.monotonic() < until:
                await asyncio.sleep(0.05)
        self._flushing = True
        for key in list(self._held):
            self._held[key].timer.cancel()
            self._release(key)  # sent now, unless another node's event took its mark
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled(), deadline)
