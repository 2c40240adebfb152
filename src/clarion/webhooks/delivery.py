"""Delivering webhook requests: queue, post, sign, retry, give up; per-target counters.

Each target has its own queue in the :class:`JobStore` (in memory, or in Redis where
the nodes share it and jobs survive a restart), bounded by ``max_queue`` requests and
``max_queue_bytes`` bytes (the oldest dropped and counted), and a poller that claims due
jobs while fewer than ``concurrency`` requests are in flight. A job is kept encoded,
its events as one JSON array of bytes, from the outbox to the request body.

A failed request (network error, timeout, non-2xx) is retried with exponential backoff
and jitter for ``retry_for`` seconds, re-signed with a fresh ``time_ms`` each time. A
slow or failing target never delays another target or app.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import msgspec

from clarion import __version__, metrics
from clarion.admin.taps import Taps
from clarion.cluster.interfaces import JobStore
from clarion.config import AppConfig, WebhookSettings, WebhookTarget, redact_url
from clarion.protocol import webhooks as hooks
from clarion.protocol.webhooks import WebhookEvent
from clarion.webhooks.clock import Clock, Timer
from clarion.webhooks.stores import MemoryJobStore, job_events

log = logging.getLogger("clarion.webhooks")

USER_AGENT = f"Clarion-Webhooks/{__version__}"
FIRST_RETRY = 1.0
MAX_RETRY_GAP = 60.0
# Given-up jobs kept per app for the admin console's Retry.
MAX_GIVEN_UP = 20
POLL = 1.0  # seconds between two looks at a target's queue when nothing wakes its poller
DROP_LOG_EVERY = 10.0  # seconds between two log lines about a target's full queue


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

    def add(self, other: Stats) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retrying += other.retrying
        self.dropped += other.dropped


@dataclass
class Job:
    """One request's events: a list as the outbox gathered them, or (once stored) their
    encoded JSON array, kept as bytes: a job waiting or in flight is no object tree."""

    events: list[WebhookEvent] | msgspec.Raw
    first_attempt: float = 0.0
    attempts: int = 0
    id: str | None = None  # once in the store
    count: int = 0  # its events (set from the list when not given)

    def __post_init__(self) -> None:
        if not self.count and isinstance(self.events, list):
            self.count = len(self.events)


class _Stored(msgspec.Struct, forbid_unknown_fields=False):
    """A job as stored: its events stay encoded (``msgspec.Raw``)."""

    u: str
    e: msgspec.Raw
    f: float
    n: int
    k: int = -1  # -1: stored by a version that did not count (counted when read)


def encode_job(url: str, job: Job) -> bytes:
    """The stored form. ``k`` (the events) comes first: the stores read it from the
    payload's first bytes to count what they drop (see JobStore.add)."""
    return msgspec.json.encode(
        {"k": job.count, "u": url, "e": job.events, "f": job.first_attempt, "n": job.attempts}
    )


_decoder = msgspec.json.Decoder(_Stored)


def decode_job(payload: bytes, job_id: str | None, url: str | None) -> Job | None:
    """The stored job, or None if it is unreadable or was queued for another URL
    (``url`` None: any)."""
    try:
        raw = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if url is not None and raw.u != url:
        return None
    count = raw.k
    if count < 0:
        try:
            count = len(msgspec.json.decode(raw.e, type=list[Any]))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
    return Job(raw.e, raw.f, raw.n, job_id, count)


def envelope(time_ms: int, job: Job) -> bytes:
    """The request body ``{time_ms, events}`` (docs/protocol.md §40), the events as stored."""
    return msgspec.json.encode({"time_ms": time_ms, "events": job.events})


@dataclass
class Target:
    """One configured receiver of one app: its queue, its requests in flight, its counts."""

    app_id: str
    config: WebhookTarget
    wanted: frozenset[str]
    stats: Stats = field(default_factory=Stats)
    in_flight: int = 0
    index: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    poller: asyncio.Task[None] | None = None
    retries: set[Timer] = field(default_factory=set)  # wake-ups of jobs due again later
    drop_logged_at: float = float("-inf")  # when its full queue was last logged
    unlogged_drops: int = 0  # events dropped since

    @property
    def queue_id(self) -> str:
        return f"{self.app_id}:{self.index}"

    def accepts(self, event: WebhookEvent) -> bool:
        if event["name"] not in self.wanted:
            return False
        prefix = self.config.channel_prefix
        return not prefix or str(event.get("channel", "")).startswith(prefix)


@dataclass
class GivenUp:
    """A job whose retry window ended without a delivery."""

    number: int
    target: Target
    job: Job
    error: str
    time: float


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """Send one request: None if the receiver took it (2xx), else what went wrong."""
        ...

    async def aclose(self) -> None: ...


class _Body:
    """A request body httpx reads once; released when the attempt is over. httpx's
    connection objects form reference cycles that outlive the request until the
    cycle collector runs (a receiver that closes each connection leaves one per
    request): what they keep must not be the body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data, self.data = self.data, b""
        yield data


class HttpPoster:
    """Requests through one pooled httpx client, each bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        content = _Body(body)
        headers["Content-Length"] = str(len(body))  # (not chunked: the size is known)
        try:
            # One deadline for the whole attempt (httpx's timeout is per phase), kept
            # below the lease of a job so that no other node claims it meanwhile.
            async with asyncio.timeout(self._timeout):
                reply = await self._client.post(url, content=content, headers=headers)
        except TimeoutError:
            return f"no answer within {self._timeout} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            content.data = b""
        if 200 <= reply.status_code < 300:
            return None
        return f"HTTP {reply.status_code}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class Deliveries:
    """Jobs into the store, due jobs out of it to their receivers, until ``close``."""

    def __init__(
        self,
        app_config: Callable[[str], AppConfig | None],
        settings: WebhookSettings,
        store: JobStore,
        clock: Clock,
        poster: Poster,
    ) -> None:
        self._app_config = app_config
        self._settings = settings
        self._store = store
        # A store of this process dies with it: at shutdown its jobs get their last
        # chance now, and what is left is lost (and counted).
        self._volatile = store if isinstance(store, MemoryJobStore) else None
        self._clock = clock
        self._poster = poster
        self._limit = settings.max_queue
        self._limit_bytes = settings.max_queue_bytes
        self._closing = False
        self._adds: set[asyncio.Task[None]] = set()
        self._deliveries: set[asyncio.Task[None]] = set()
        # The admin console's record of attempts (set by the node; None in unit tests).
        self.taps: Taps | None = None
        # Per app, the last jobs given up (number, target, job, error): the admin console
        # may send one again. Bounded: their events are kept encoded, a few KiB each.
        self.given_up: dict[str, deque[GivenUp]] = {}
        self._given_up_numbers = itertools.count(1)

    @property
    def deadline(self) -> float:
        """Seconds a shutdown waits for pending webhooks (each of its steps)."""
        return self._settings.shutdown_deadline

    def add(self, target: Target, job: Job) -> None:
        """Queue a job for the target (a store of this process takes it at once; a
        shared one in a task of its own)."""
        payload = encode_job(target.config.url, job)
        queue, limit, limit_bytes = target.queue_id, self._limit, self._limit_bytes
        if self._volatile is not None:
            self._added(target, self._volatile.add_now(queue, payload, limit, limit_bytes))
        else:
            self._spawn(self._add(target, payload, job.count), self._adds)

    async def _add(self, target: Target, payload: bytes, events: int) -> None:
        try:
            dropped = await self._store.add(
                target.queue_id, payload, self._limit, self._limit_bytes
            )
        except Exception as exc:
            target.stats.dropped += events
            metrics.webhook_deliveries.labels(target.app_id, "dropped").inc(events)
            log.error("webhook store unavailable (%s): %d event(s) lost", exc, events)
            return
        self._added(target, dropped)

    def _added(self, target: Target, dropped: int) -> None:
        if dropped:
            # The queue is full (max_queue requests or max_queue_bytes): its oldest
            # events went. Counted each time, logged at most every DROP_LOG_EVERY s.
            target.stats.dropped += dropped
            metrics.webhook_deliveries.labels(target.app_id, "dropped").inc(dropped)
            target.unlogged_drops += dropped
            now = self._clock.now()
            if now >= target.drop_logged_at + DROP_LOG_EVERY:
                log.warning(
                    "webhook queue of app %s full for %s: dropped %d event(s), the oldest"
                    " (max_queue %d requests, max_queue_bytes %d)",
                    target.app_id,
                    redact_url(target.config.url),
                    target.unlogged_drops,
                    self._limit,
                    self._limit_bytes,
                )
                target.drop_logged_at, target.unlogged_drops = now, 0
        self.ensure_poller(target)
        target.wake.set()

    def ensure_poller(self, target: Target) -> None:
        if target.poller is None and not self._closing:
            target.poller = asyncio.get_running_loop().create_task(self._poll(target))

    def forget(self, target: Target) -> None:
        """The target is configured no more: its poller stops. Its queue stays, for the
        target that takes its place (a job queued for another URL is dropped then)."""
        if target.poller is not None:
            target.poller.cancel()

    async def _poll(self, target: Target) -> None:
        """Claim due jobs of one target while it has room; wake on news or every second."""
        lease = self._settings.timeout + 5.0
        while not self._closing:
            free = self._settings.concurrency - target.in_flight
            claimed: list[tuple[str, bytes]] = []
            try:
                if free > 0:
                    claimed = await self._store.claim(target.queue_id, free, lease)
                for job_id, payload in claimed:
                    job = decode_job(payload, job_id, target.config.url)
                    if job is None:
                        # Configured differently since it was queued: nowhere to send it.
                        target.stats.dropped += job_events(payload)
                        await self._store.done(target.queue_id, job_id)
                        continue
                    target.in_flight += 1
                    self._spawn(self._deliver(target, job), self._deliveries)
            except Exception as exc:
                log.warning("webhook store unavailable: %s", exc)
            if claimed and len(claimed) == free:
                continue  # maybe more are due
            target.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):  # (no task per wait, as wait_for makes)
                    await target.wake.wait()

    async def _deliver(self, target: Target, job: Job) -> None:
        assert job.id is not None
        config = self._app_config(target.app_id)
        try:
            if config is None:  # the app is gone
                target.stats.dropped += job.count
                await self._store.done(target.queue_id, job.id)
                return
            now = self._clock.now()
            if not job.first_attempt:
                job.first_attempt = now
            job.attempts += 1
            # Signed afresh on every attempt: a receiver rejects a time_ms > 300 s old.
            body = envelope(int(now * 1000), job)
            headers = hooks.headers(config.key, config.secret, body, target.config.headers)
            headers["User-Agent"] = USER_AGENT
            error = await self._poster.post(target.config.url, body, headers)
            if self.taps is not None:
                self.taps.webhook(target.app_id, redact_url(target.config.url), job, error)
            if error is None:
                target.stats.sent += job.count
                metrics.webhook_deliveries.labels(target.app_id, "sent").inc(job.count)
                await self._store.done(target.queue_id, job.id)
                return
            target.stats.failed += 1
            metrics.webhook_deliveries.labels(target.app_id, "failed").inc()
            gap = self._next_gap(job)
            if gap is None:
                self._give_up(target, job, error)
                await self._store.done(target.queue_id, job.id)
                return
            _log_retry(target, job, error, gap)
            await self._store.retry(
                target.queue_id, job.id, encode_job(target.config.url, job), gap
            )
            self._wake_later(target, gap)
        finally:
            target.in_flight -= 1
            target.wake.set()

    def _next_gap(self, job: Job) -> float | None:
        """Seconds until the next attempt, or None when the retry window is over."""
        elapsed = self._clock.now() - job.first_attempt
        gap = min(MAX_RETRY_GAP, FIRST_RETRY * 2 ** (job.attempts - 1))
        gap *= random.uniform(0.5, 1.0)  # jitter: failing receivers are not hit in step
        return None if elapsed + gap > self._settings.retry_for else gap

    def _wake_later(self, target: Target, gap: float) -> None:
        """Wake the target's poller when the retried job is due (rather than at its
        next look), and count the job as retrying until then."""

        def due() -> None:
            target.retries.discard(timer)
            target.stats.retrying -= 1
            target.wake.set()

        timer = self._clock.call_later(gap, due)
        target.retries.add(timer)
        target.stats.retrying += 1

    def _give_up(self, target: Target, job: Job, error: str) -> None:
        kept = self.given_up.get(target.app_id)
        if kept is None:
            kept = self.given_up[target.app_id] = deque(maxlen=MAX_GIVEN_UP)
        kept.appendleft(GivenUp(next(self._given_up_numbers), target, job, error, time.time()))
        target.stats.dropped += job.count
        metrics.webhook_deliveries.labels(target.app_id, "dropped").inc(job.count)
        log.error(
            "webhook to %s for app %s given up after %d attempts (%s): %d event(s) lost",
            redact_url(target.config.url),
            target.app_id,
            job.attempts,
            error,
            job.count,
        )

    def retry_given_up(self, app_id: str, number: int) -> bool:
        """Queue a given-up job again, as new (its retry window starts over)."""
        kept = self.given_up.get(app_id, deque())
        for entry in kept:
            if entry.number == number:
                kept.remove(entry)
                self.add(entry.target, Job(entry.job.events, count=entry.job.count))
                return True
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._adds.discard(task)
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook task failed", exc_info=task.exception())

    # --- reporting and shutdown ---------------------------------------------------------

    def waiting(self, target: Target) -> int:
        """Requests of the target waiting or in flight on this node (a shared store's
        waiting jobs are the cluster's: only those in flight here count)."""
        if self._volatile is not None:
            return self._volatile.size_now(target.queue_id)
        return target.in_flight

    async def queued(self, target: Target) -> int:
        """Requests of the target waiting or in flight, as the store counts them."""
        with contextlib.suppress(Exception):
            return await self._store.size(target.queue_id)
        return target.in_flight

    async def close(self, targets: list[Target]) -> int:
        """Deliver what is due within the deadline; return the events lost.

        A durable store loses nothing: what is not delivered by the deadline stays in it
        and is delivered after the restart (or by another node). A store of this process
        brings its retries forward and is delivered until it is empty; the rest is lost.
        """
        deadline = self.deadline
        loop = asyncio.get_running_loop()
        if self._adds:  # jobs still being added reach the store first
            await asyncio.wait(list(self._adds), timeout=deadline)
        until = loop.time() + deadline
        if self._volatile is not None:
            for target in targets:
                self._forget_retries(target)
                target.wake.set()
            self._volatile.hurry()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._volatile.emptied(), until - loop.time())
        self._closing = True
        pollers = [target.poller for target in targets if target.poller is not None]
        for poller in pollers:
            poller.cancel()
        if pollers:
            await asyncio.wait(pollers, timeout=2.0)
        for target in targets:
            self._forget_retries(target)
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=max(0.0, until - loop.time()))
        left = [task for task in self._deliveries if not task.done()]
        for task in left:
            task.cancel()  # a durable job's lease runs out and it is delivered again later
        if left:
            await asyncio.wait(left, timeout=2.0)
        await self._poster.aclose()
        if self._volatile is None:
            if left:
                log.warning(
                    "shutdown: %d webhook delivery(ies) left to the store for later", len(left)
                )
            return 0
        lost = 0
        by_queue = {target.queue_id: target for target in targets}
        for queue_id, payloads in self._volatile.drain().items():
            events = 0
            for payload in payloads:
                events += job_events(payload)
            if queue_id in by_queue:
                by_queue[queue_id].stats.dropped += events
            lost += events
        if lost:
            log.error("shutdown: %d webhook event(s) could not be delivered and are lost", lost)
        return lost

    @staticmethod
    def _forget_retries(target: Target) -> None:
        for timer in target.retries:
            timer.cancel()
        target.stats.retrying -= len(target.retries)
        target.retries.clear()


def _log_retry(target: Target, job: Job, error: str, gap: float) -> None:
    log.warning(
        "webhook to %s for app %s failed (%s); retry %d in %.1f s",
        redact_url(target.config.url),
        target.app_id,
        error,
        job.attempts,
        gap,
    )
