"""The webhook outbox: collect, hold back, batch, sign, deliver, retry — off the hot path.

The hub calls :meth:`Outbox.emit` synchronously with a webhook event; that costs a
dictionary lookup when the app has no webhooks. Everything else happens later on the
event loop:

* ``channel_vacated``, ``member_removed`` and ``user_offline`` are held for the app's
  ``webhook_delay``; the opposite event arriving meanwhile cancels both, so a page reload
  does not flap. With the cluster adapter a held event also leaves a mark every node
  sees, so the opposite event fired by another node cancels it too.
* Events of one app are gathered for ``webhook_batch_window`` seconds and sent as one
  ``{time_ms, events}`` request per target (at most 100 events), filtered by the target's
  event types and channel prefix.
* Each target has its own bounded queue and a few requests in flight; a failed request
  (network error, timeout, non-2xx) is retried with exponential backoff and jitter for
  ``retry_for`` seconds, re-signed with a fresh ``time_ms`` each time. A slow or failing
  target never delays another target or app.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from clarion import __version__, metrics
from clarion.cluster.interfaces import HeldKey, HeldMarks, JobStore, MarkOp
from clarion.config import AppConfig, WebhookSettings, WebhookTarget, redact_url
from clarion.protocol import webhooks as shapes
from clarion.protocol.webhooks import WebhookEvent

log = logging.getLogger("clarion.webhooks")

USER_AGENT = f"Clarion-Webhooks/{__version__}"
FIRST_RETRY = 1.0
MAX_RETRY_GAP = 60.0
RECHECK = 1.0  # seconds between two checks of a held event while Redis is away


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retrying": self.retrying,
            "dropped": self.dropped,
        }


@dataclass
class _Job:
    events: list[WebhookEvent]
    first_attempt: float = 0.0
    attempts: int = 0
    id: str | None = None  # in a durable store


@dataclass
class _Held:
    handle: asyncio.TimerHandle
    event: WebhookEvent
    token: str  # this hold's mark in the cluster (a newer hold replaces it)


@dataclass
class _Pending:
    """An event waiting for its turn (and maybe for the cluster's answer)."""

    app_id: str
    event: WebhookEvent
    decided: bool = False
    accept: bool = False


MarkDone = Callable[[bool | None], None]


@dataclass
class _Target:
    app_id: str
    config: WebhookTarget
    wanted: frozenset[str]
    stats: Stats = field(default_factory=Stats)
    queue: deque[_Job] = field(default_factory=deque)
    in_flight: int = 0
    index: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    poller: asyncio.Task[None] | None = None

    @property
    def queue_id(self) -> str:
        return f"{self.app_id}:{self.index}"

    def accepts(self, event: WebhookEvent) -> bool:
        if event["name"] not in self.wanted:
            return False
        prefix = self.config.channel_prefix
        return not prefix or str(event.get("channel", "")).startswith(prefix)


class Outbox:
    def __init__(
        self,
        app_config: Callable[[str], AppConfig | None],
        settings: WebhookSettings,
        clock: Callable[[], float] = time.time,
        store: JobStore | None = None,
        marks: HeldMarks | None = None,
    ) -> None:
        self._app_config = app_config
        self._store = store
        self._marks = marks
        self._mark_ops: list[tuple[MarkOp, MarkDone | None]] = []
        self._in_order: deque[_Pending] = deque()
        self._token_prefix = secrets.token_hex(4) + "."
        self._tokens = itertools.count()
        self._marks_idle = asyncio.Event()
        self._marks_idle.set()
        self._closing = False
        self._flushing_held = False  # shutdown: held events go out, checked or not
        self._settings = settings
        self._clock = clock
        self._targets: dict[str, list[_Target]] = {}
        self._pending: dict[str, list[WebhookEvent]] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        self._held: dict[HeldKey, _Held] = {}
        self._retries: dict[asyncio.TimerHandle, tuple[_Target, _Job]] = {}
        # Running tasks: a delivery (with its job), or an add to the durable store (None).
        self._tasks: dict[asyncio.Task[None], _Job | None] = {}
        self._client: httpx.AsyncClient | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # --- collecting -----------------------------------------------------------------

    def _targets_of(self, app_id: str) -> list[_Target]:
        targets = self._targets.get(app_id)
        if targets is None:
            config = self._app_config(app_id)
            targets = [
                _Target(app_id, target, frozenset(target.event_types), index=index)
                for index, target in enumerate(config.webhooks if config is not None else [])
            ]
            self._targets[app_id] = targets
        return targets

    def reconfigure(self, app_id: str) -> None:
        """The app's configuration changed: its targets are rebuilt on next use. Requests
        already queued for the old targets still go out; their pollers stop."""
        for target in self._targets.pop(app_id, []):
            if target.poller is not None:
                target.poller.cancel()

    def wants(self, app_id: str, name: str) -> bool:
        """Cheap check for callers that would otherwise build an event for nothing."""
        return any(name in target.wanted for target in self._targets_of(app_id))

    def emit(self, app_id: str, event: WebhookEvent) -> None:
        if self._marks is None:
            self._decide(app_id, event, None)
            return
        # With the cluster's marks, deciding an event may take a round trip to Redis:
        # events wait in emission order, each going out once it and all before it are
        # decided (a member_added must not overtake the channel_occupied before it).
        entry = _Pending(app_id, event)
        self._in_order.append(entry)
        self._decide(app_id, event, entry)
        self._release_in_order()

    def _decide(self, app_id: str, event: WebhookEvent, entry: _Pending | None) -> None:
        """Whether the event goes on: cancelled by a held opposite (here or, through the
        marks, on another node), else accepted. ``entry`` None: accepted at once."""

        def decided(accept: bool) -> None:
            if entry is None:
                if accept:
                    self._accept(app_id, event)
                return
            entry.decided, entry.accept = True, accept

        held_name = shapes.CANCELS.get(event["name"])
        if held_name is not None:
            # Before the wants() check: a target that only wants channel_vacated must
            # still have it cancelled when the channel is re-occupied within the delay.
            key = self._held_key(app_id, held_name, event)
            held = self._held.pop(key, None) if self._held else None
            if held is not None:
                held.handle.cancel()  # the pair cancels out: neither is sent
                if self._marks is not None:
                    self._mark(MarkOp("take", key), None)  # after its hold: ops keep order
                decided(False)
                return
            if (
                self._marks is not None
                and self._delay(app_id) > 0
                and self.wants(app_id, held_name)
            ):
                # Perhaps held by another node: goes on only if there is no mark to take.
                def unless_taken(taken: bool | None) -> None:
                    decided(not taken)
                    self._release_in_order()

                self._mark(MarkOp("take", key), unless_taken)
                return
        decided(True)

    def _release_in_order(self) -> None:
        queue = self._in_order
        while queue and queue[0].decided:
            entry = queue.popleft()
            if entry.accept:
                self._accept(entry.app_id, entry.event)

    def _delay(self, app_id: str) -> float:
        config = self._app_config(app_id)
        return config.webhook_delay if config is not None else 0.0

    def _accept(self, app_id: str, event: WebhookEvent) -> None:
        name = event["name"]
        if not self.wants(app_id, name):
            return
        delay = self._delay(app_id)
        if delay > 0 and name in shapes.HELD_UNTIL_CANCELLED:
            key = self._held_key(app_id, name, event)
            previous = self._held.pop(key, None)
            if previous is not None:
                previous.handle.cancel()
            handle = asyncio.get_running_loop().call_later(delay, self._release, key)
            token = f"{self._token_prefix}{next(self._tokens)}"
            self._held[key] = _Held(handle, event, token)
            if self._marks is not None:
                self._mark(MarkOp("hold", key, seconds=delay, token=token), None)
            return
        self._queue_event(app_id, event, self._app_config(app_id))

    @staticmethod
    def _held_key(app_id: str, name: str, event: WebhookEvent) -> HeldKey:
        return HeldKey(app_id, name, str(event.get("channel", "")), str(event.get("user_id", "")))

    def _release(self, key: HeldKey) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        if self._marks is None:
            self._queue_event(key.app_id, held.event, self._app_config(key.app_id))
            return

        def decided(send: bool | None) -> None:
            if send or (send is None and self._flushing_held):
                self._queue_event(key.app_id, held.event, self._app_config(key.app_id))
            elif send is None and key not in self._held:  # (a newer hold decides)
                # Unknown yet: Redis is away, or just back and the other nodes may not
                # have registered their sockets again. Held on and asked again (a
                # node's own view during an outage is not the cluster's).
                handle = asyncio.get_running_loop().call_later(RECHECK, self._release, key)
                self._held[key] = _Held(handle, held.event, held.token)

        self._mark(MarkOp("release", key, token=held.token), decided)

    def _mark(self, op: MarkOp, then: MarkDone | None) -> None:
        """Apply an operation on the cluster-wide marks; ``then`` gets its outcome.
        One task applies them in order, batched."""
        self._mark_ops.append((op, then))
        if self._marks_idle.is_set():
            self._marks_idle.clear()
            self._spawn(self._apply_marks())

    async def _apply_marks(self) -> None:
        assert self._marks is not None
        try:
            while self._mark_ops:
                batch, self._mark_ops = self._mark_ops, []
                results: list[bool | None] = [None] * len(batch)  # None: outcome unknown
                try:
                    results[:] = await self._marks.apply([op for op, _ in batch]) or results
                except Exception:
                    log.exception("webhook hold marks could not be applied")
                for (_, then), result in zip(batch, results, strict=True):
                    if then is not None:
                        then(result)
        finally:
            self._marks_idle.set()

    def _queue_event(self, app_id: str, event: WebhookEvent, config: AppConfig | None) -> None:
        pending = self._pending.setdefault(app_id, [])
        pending.append(event)
        if app_id in self._flush_handles:
            return
        window = config.webhook_batch_window if config is not None else 0.0
        loop = asyncio.get_running_loop()
        if window <= 0:
            self._flush(app_id)
        else:
            self._flush_handles[app_id] = loop.call_later(window, self._flush, app_id)

    def _flush(self, app_id: str) -> None:
        self._flush_handles.pop(app_id, None)
        events = self._pending.pop(app_id, [])
        if not events:
            return
        config = self._app_config(app_id)
        one_per_request = config is not None and config.webhook_batch_window <= 0
        size = 1 if one_per_request else shapes.MAX_EVENTS_PER_REQUEST
        for target in self._targets_of(app_id):
            chosen = [event for event in events if target.accepts(event)]
            for start in range(0, len(chosen), size):
                self._enqueue(target, _Job(chosen[start : start + size]))

    # --- delivering -------------------------------------------------------------------

    def _enqueue(self, target: _Target, job: _Job) -> None:
        if self._store is not None:
            self._spawn(self._store_add(target, job))
            return
        if len(target.queue) >= self._settings.max_queue:
            dropped = target.queue.popleft()
            target.stats.dropped += len(dropped.events)
            log.warning(
                "webhook queue of app %s full for %s: dropped %d event(s)",
                target.app_id,
                redact_url(target.config.url),
                len(dropped.events),
            )
        target.queue.append(job)
        self._pump(target)

    def _pump(self, target: _Target) -> None:
        while target.queue and target.in_flight < self._settings.concurrency:
            job = target.queue.popleft()
            target.in_flight += 1
            self._spawn(self._deliver(target, job), job)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook task failed", exc_info=task.exception())
        self._check_idle()

    def _spawn(self, coro: Coroutine[Any, Any, None], job: _Job | None = None) -> None:
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = job
        task.add_done_callback(self._task_done)

    # --- the durable store (cluster adapter): jobs survive restarts, shared by nodes ----

    async def start(self, app_ids: list[str]) -> None:
        """Resume the deliveries a durable store holds (from before a restart)."""
        if self._store is None:
            return
        for app_id in app_ids:
            for target in self._targets_of(app_id):
                self._ensure_poller(target)

    def _ensure_poller(self, target: _Target) -> None:
        if target.poller is None and not self._closing:
            target.poller = asyncio.get_running_loop().create_task(self._poll(target))

    async def _store_add(self, target: _Target, job: _Job) -> None:
        assert self._store is not None
        try:
            dropped = await self._store.add(
                target.queue_id, _encode_job(target, job), self._settings.max_queue
            )
        except Exception as exc:
            target.stats.dropped += len(job.events)
            log.error("webhook store unavailable (%s): %d event(s) lost", exc, len(job.events))
            return
        if dropped:
            target.stats.dropped += dropped
            log.warning("webhook queue of app %s full: dropped %d job(s)", target.app_id, dropped)
        self._ensure_poller(target)
        target.wake.set()

    async def _poll(self, target: _Target) -> None:
        """Claim due jobs of one target while it has room; wake on news or every second."""
        assert self._store is not None
        lease = self._settings.timeout + 5.0
        while not self._closing:
            free = self._settings.concurrency - target.in_flight
            claimed: list[tuple[str, bytes]] = []
            try:
                if free > 0:
                    claimed = await self._store.claim(target.queue_id, free, lease)
                for job_id, payload in claimed:
                    job = _decode_job(payload, job_id, target.config.url)
                    if job is None:
                        # Configured differently since it was queued: nowhere to send it.
                        target.stats.dropped += 1
                        await self._store.done(target.queue_id, job_id)
                        continue
                    target.in_flight += 1
                    self._spawn(self._deliver(target, job), job)
            except Exception as exc:
                log.warning("webhook store unavailable: %s", exc)
            if claimed and len(claimed) == free:
                continue  # maybe more are due
            target.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(target.wake.wait(), 1.0)

    async def _deliver(self, target: _Target, job: _Job) -> None:
        config = self._app_config(target.app_id)
        try:
            if config is None:
                target.stats.dropped += len(job.events)
                return
            now = self._clock()
            if not job.first_attempt:
                job.first_attempt = now
            job.attempts += 1
            # Signed afresh on every attempt: a receiver rejects a time_ms > 300 s old.
            body = shapes.envelope(int(now * 1000), job.events)
            headers = shapes.headers(config.key, config.secret, body, target.config.headers)
            headers["User-Agent"] = USER_AGENT
            error = await self._post(target.config.url, body, headers)
            if error is None:
                target.stats.sent += len(job.events)
                metrics.webhook_deliveries.labels(target.app_id, "sent").inc(len(job.events))
                if self._store is not None and job.id is not None:
                    await self._store.done(target.queue_id, job.id)
                return
            target.stats.failed += 1
            metrics.webhook_deliveries.labels(target.app_id, "failed").inc()
            if self._store is not None:
                await self._retry_stored(target, job, error)
            else:
                self._retry_later(target, job, error)
        finally:
            target.in_flight -= 1
            if self._store is not None:
                target.wake.set()
            else:
                self._pump(target)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.timeout)
        try:
            # One deadline for the whole attempt (httpx's timeout is per phase), kept
            # below the lease of a durable job so that no other node claims it meanwhile.
            async with asyncio.timeout(self._settings.timeout):
                reply = await self._client.post(url, content=body, headers=headers)
        except TimeoutError:
            return f"no answer within {self._settings.timeout} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= reply.status_code < 300:
            return None
        return f"HTTP {reply.status_code}"

    def _next_gap(self, job: _Job) -> float | None:
        """Seconds until the next attempt, or None when the retry window is over."""
        elapsed = self._clock() - job.first_attempt
        gap = min(MAX_RETRY_GAP, FIRST_RETRY * 2 ** (job.attempts - 1))
        gap *= random.uniform(0.5, 1.0)  # jitter: failing receivers are not hit in step
        return None if elapsed + gap > self._settings.retry_for else gap

    def _give_up(self, target: _Target, job: _Job, error: str) -> None:
        target.stats.dropped += len(job.events)
        metrics.webhook_deliveries.labels(target.app_id, "dropped").inc(len(job.events))
        log.error(
            "webhook to %s for app %s given up after %d attempts (%s): %d event(s) lost",
            redact_url(target.config.url),
            target.app_id,
            job.attempts,
            error,
            len(job.events),
        )

    async def _retry_stored(self, target: _Target, job: _Job, error: str) -> None:
        assert self._store is not None and job.id is not None
        gap = self._next_gap(job)
        if gap is None:
            self._give_up(target, job, error)
            await self._store.done(target.queue_id, job.id)
            return
        _log_retry(target, job, error, gap)
        await self._store.retry(target.queue_id, job.id, _encode_job(target, job), gap)

    def _retry_later(self, target: _Target, job: _Job, error: str) -> None:
        gap = self._next_gap(job)
        if gap is None:
            self._give_up(target, job, error)
            return
        _log_retry(target, job, error, gap)
        target.stats.retrying += 1
        self._idle.clear()
        handle: asyncio.TimerHandle = asyncio.get_running_loop().call_later(
            gap, lambda: self._retry(handle)
        )
        self._retries[handle] = (target, job)

    def _retry(self, handle: asyncio.TimerHandle) -> None:
        entry = self._retries.pop(handle, None)
        if entry is None:
            return
        target, job = entry
        target.stats.retrying -= 1
        target.queue.appendleft(job)
        self._pump(target)

    def _check_idle(self) -> None:
        if (
            not self._tasks
            and not self._retries
            and not any(target.queue for targets in self._targets.values() for target in targets)
        ):
            self._idle.set()

    # --- reporting and shutdown ---------------------------------------------------------

    def queue_sizes(self) -> dict[str, int]:
        """Webhook requests waiting or in flight on this node, per app (for metrics)."""
        return {
            app_id: sum(len(t.queue) + t.in_flight for t in targets)
            for app_id, targets in self._targets.items()
        }

    async def status(self, app_id: str) -> dict[str, Any]:
        """Delivery counters of this node, per target; ``queued`` is cluster-wide when the
        store is shared."""
        targets = self._targets_of(app_id)
        total = Stats()
        report = []
        for target in targets:
            stats = target.stats
            total.sent += stats.sent
            total.failed += stats.failed
            total.retrying += stats.retrying
            total.dropped += stats.dropped
            queued = len(target.queue) + target.in_flight
            if self._store is not None:
                with contextlib.suppress(Exception):
                    queued = await self._store.size(target.queue_id)
            url = redact_url(target.config.url)
            report.append({"url": url, **stats.as_dict(), "queued": queued})
        return {**total.as_dict(), "targets": report}

    async def close(self) -> int:
        """Send what is held or pending, wait up to the deadline; return the events dropped.

        With a durable store nothing is dropped: what is not delivered by the deadline stays
        in the store and is delivered after the restart (or by another node).
        """
        if self._marks is not None and self._held:
            # In a cluster the sockets closed by a drain come back through other nodes:
            # the held events run their course (up to the deadline), so that a client
            # that moves within the delay cancels them as on a running node.
            deadline = time.monotonic() + self._settings.shutdown_deadline
            while self._held and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._flushing_held = True
        for key in list(self._held):
            self._held[key].handle.cancel()
            self._release(key)  # sent now, unless another node's event took its mark
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._marks_idle.wait(), self._settings.shutdown_deadline)
        for app_id in list(self._pending):
            flush = self._flush_handles.pop(app_id, None)
            if flush is not None:
                flush.cancel()
            self._flush(app_id)
        if self._store is not None:
            return await self._close_durable()
        # Retries due later are brought forward: this is their last chance.
        for retry in list(self._retries):
            retry.cancel()
            self._retry(retry)
        self._check_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.shutdown_deadline)
        dropped = 0
        for targets in self._targets.values():
            for target in targets:
                lost = sum(len(job.events) for job in target.queue)
                target.queue.clear()
                target.stats.dropped += lost
                dropped += lost
        for handle, (target, job) in list(self._retries.items()):
            handle.cancel()
            del self._retries[handle]
            target.stats.retrying -= 1
            target.stats.dropped += len(job.events)
            dropped += len(job.events)
        for task, running in list(self._tasks.items()):
            task.cancel()
            dropped += len(running.events) if running is not None else 0
        if self._client is not None:
            await self._client.aclose()
        if dropped:
            log.error("shutdown: %d webhook event(s) could not be delivered and are lost", dropped)
        return dropped

    async def _close_durable(self) -> int:
        # Jobs still being added reach the store first; then deliveries get the deadline.
        adds = [task for task, job in self._tasks.items() if job is None]
        if adds:
            await asyncio.wait(adds, timeout=self._settings.shutdown_deadline)
        self._closing = True
        pollers = [t.poller for ts in self._targets.values() for t in ts if t.poller is not None]
        for poller in pollers:
            poller.cancel()
        if pollers:
            await asyncio.wait(pollers, timeout=2.0)
        deliveries = [task for task, job in self._tasks.items() if job is not None]
        if deliveries:
            await asyncio.wait(deliveries, timeout=self._settings.shutdown_deadline)
        left = [task for task in self._tasks if not task.done()]
        for task in left:
            task.cancel()  # its job's lease runs out and it is delivered again later
        if left:
            await asyncio.wait(left, timeout=2.0)
        if self._client is not None:
            await self._client.aclose()
        if left:
            log.warning("shutdown: %d webhook delivery(ies) left to the store for later", len(left))
        return 0


def _encode_job(target: _Target, job: _Job) -> bytes:
    return msgspec.json.encode(
        {"u": target.config.url, "e": job.events, "f": job.first_attempt, "n": job.attempts}
    )


def _decode_job(payload: bytes, job_id: str, url: str) -> _Job | None:
    """The stored job, or None if it is unreadable or was queued for another URL."""
    try:
        raw = msgspec.json.decode(payload)
        if raw["u"] != url:
            return None
        return _Job(raw["e"], float(raw["f"]), int(raw["n"]), job_id)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None


def _log_retry(target: _Target, job: _Job, error: str, gap: float) -> None:
    log.warning(
        "webhook to %s for app %s failed (%s); retry %d in %.1f s",
        redact_url(target.config.url),
        target.app_id,
        error,
        job.attempts,
        gap,
    )
