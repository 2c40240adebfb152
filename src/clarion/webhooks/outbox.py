"""The webhook outbox: take events from the hub, decide, batch, hand them to delivery.

The hub calls :meth:`Outbox.emit` synchronously with a webhook event; that costs a
dictionary lookup when the app has no webhooks, and no await when it has. Everything
else happens later on the event loop:

* held events and their cancellation are :mod:`clarion.webhooks.holds`';
* an event that waits for the cluster's answer (was its opposite held by another node?)
  keeps its place: events go on in emission order (a ``member_added`` must not overtake
  the ``channel_occupied`` before it);
* events of one app are gathered for ``webhook_batch_window`` seconds and sent as one
  ``{time_ms, events}`` request per target (at most 100 events), filtered by the
  target's event types and channel prefix;
* queueing, posting and retrying are :mod:`clarion.webhooks.delivery`'s.

Without Redis the job store and the marks are the in-memory ones
(:mod:`clarion.webhooks.stores`): the same path runs either way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clarion.cluster.interfaces import HeldKey, HeldMarks, JobStore
from clarion.config import AppConfig, WebhookSettings, redact_url
from clarion.protocol import webhooks as hooks
from clarion.protocol.webhooks import WebhookEvent
from clarion.webhooks.clock import Clock, LoopClock, Timer
from clarion.webhooks.delivery import Deliveries, HttpPoster, Job, Poster, Stats, Target
from clarion.webhooks.holds import Holds, held_key
from clarion.webhooks.stores import MemoryHeldMarks, MemoryJobStore


@dataclass(slots=True)
class _Pending:
    """An event waiting for its turn (and maybe for the cluster's answer)."""

    app_id: str
    event: WebhookEvent
    decided: bool = False
    accept: bool = False


class Outbox:
    def __init__(
        self,
        app_config: Callable[[str], AppConfig | None],
        settings: WebhookSettings,
        clock: Clock | None = None,
        store: JobStore | None = None,
        marks: HeldMarks | None = None,
        poster: Poster | None = None,
    ) -> None:
        self._app_config = app_config
        self._clock = clock = clock if clock is not None else LoopClock()
        self._holds = Holds(
            marks if marks is not None else MemoryHeldMarks(clock.now), clock, self._sent_on
        )
        self._deliveries = Deliveries(
            app_config,
            settings,
            store if store is not None else MemoryJobStore(clock.now),
            clock,
            poster if poster is not None else HttpPoster(settings.timeout),
        )
        self._in_order: deque[_Pending] = deque()
        self._targets: dict[str, list[Target]] = {}
        self._pending: dict[str, list[WebhookEvent]] = {}
        self._flush_timers: dict[str, Timer] = {}

    @property
    def deliveries(self) -> Deliveries:
        """The delivery side (the node hands it the admin console's taps)."""
        return self._deliveries

    # --- choosing targets -------------------------------------------------------------

    def _targets_of(self, app_id: str) -> list[Target]:
        targets = self._targets.get(app_id)
        if targets is None:
            config = self._app_config(app_id)
            targets = [
                Target(app_id, target, frozenset(target.event_types), index=index)
                for index, target in enumerate(config.webhooks if config is not None else [])
            ]
            self._targets[app_id] = targets
        return targets

    def reconfigure(self, app_id: str) -> None:
        """The app's configuration changed: its targets are rebuilt. Requests already
        queued go to the target now at their place if its URL is the same (else they
        are dropped); those in flight finish."""
        old = self._targets.pop(app_id, [])
        for target in old:
            self._deliveries.forget(target)
        if any(target.poller is not None for target in old):
            for target in self._targets_of(app_id):
                self._deliveries.ensure_poller(target)

    def wants(self, app_id: str, name: str) -> bool:
        """Cheap check for callers that would otherwise build an event for nothing."""
        return any(name in target.wanted for target in self._targets_of(app_id))

    # --- deciding, in order -----------------------------------------------------------

    def emit(self, app_id: str, event: WebhookEvent) -> None:
        accept = True
        name = event["name"]
        held_name = hooks.CANCELS.get(name)
        if held_name is not None:
            # The cancellation rule, for every target alike: a held event and the
            # opposite one within the delay swallow each other. Checked before any
            # wants(): a target that wants only member_added gets no second member_added
            # for a page reload, one that wants only member_removed no removal.
            key = held_key(app_id, held_name, event)
            if self._holds.cancel(key):
                accept = False  # the pair cancels out: neither is sent
            elif self._holds.shared and self._delay(app_id) > 0 and self._wants_pair(app_id, name):
                # Perhaps held by another node: goes on only if there is no mark to take.
                self._wait_for_take(_Pending(app_id, event), key)
                return
        if self._in_order:  # behind events still waiting for the cluster's answer
            self._in_order.append(_Pending(app_id, event, True, accept))
        elif accept:
            self._accept(app_id, event)

    def _wait_for_take(self, entry: _Pending, key: HeldKey) -> None:
        self._in_order.append(entry)

        def taken(cancelled: bool) -> None:
            entry.decided, entry.accept = True, not cancelled
            self._release_in_order()

        self._holds.take(key, taken)

    def _release_in_order(self) -> None:
        queue = self._in_order
        while queue and queue[0].decided:
            entry = queue.popleft()
            if entry.accept:
                self._accept(entry.app_id, entry.event)

    def _delay(self, app_id: str) -> float:
        config = self._app_config(app_id)
        return config.webhook_delay if config is not None else 0.0

    def _wants_pair(self, app_id: str, name: str) -> bool:
        """Whether a target wants ``name`` or its opposite (one of a held pair)."""
        opposite = hooks.HELD_UNTIL_CANCELLED.get(name) or hooks.CANCELS.get(name, name)
        return self.wants(app_id, name) or self.wants(app_id, opposite)

    def _accept(self, app_id: str, event: WebhookEvent) -> None:
        name = event["name"]
        delay = self._delay(app_id)
        if delay > 0 and name in hooks.HELD_UNTIL_CANCELLED:
            # Held even for targets that want only the opposite event: that one is
            # cancelled by this hold (see emit); the release is filtered by target.
            if self._wants_pair(app_id, name):
                self._holds.hold(held_key(app_id, name, event), event, delay)
            return
        if self.wants(app_id, name):
            self._queue_event(app_id, event)

    def _sent_on(self, key: HeldKey, event: WebhookEvent) -> None:
        """A held event's delay ran out uncancelled."""
        self._queue_event(key.app_id, event)

    # --- batching ---------------------------------------------------------------------

    def _queue_event(self, app_id: str, event: WebhookEvent) -> None:
        pending = self._pending.setdefault(app_id, [])
        pending.append(event)
        if app_id in self._flush_timers:
            return
        config = self._app_config(app_id)
        window = config.webhook_batch_window if config is not None else 0.0
        if window <= 0:
            self._flush(app_id)
        else:
            self._flush_timers[app_id] = self._clock.call_later(window, lambda: self._flush(app_id))

    def _flush(self, app_id: str) -> None:
        self._flush_timers.pop(app_id, None)
        events = self._pending.pop(app_id, [])
        if not events:
            return
        config = self._app_config(app_id)
        one_per_request = config is not None and config.webhook_batch_window <= 0
        size = 1 if one_per_request else hooks.MAX_EVENTS_PER_REQUEST
        for target in self._targets_of(app_id):
            chosen = [event for event in events if target.accepts(event)]
            for start in range(0, len(chosen), size):
                self._deliveries.add(target, Job(chosen[start : start + size]))

    # --- reporting and shutdown ---------------------------------------------------------

    async def start(self, app_ids: list[str]) -> None:
        """Resume the deliveries a durable store holds (from before a restart)."""
        for app_id in app_ids:
            for target in self._targets_of(app_id):
                self._deliveries.ensure_poller(target)

    def queue_sizes(self) -> dict[str, int]:
        """Webhook requests waiting or in flight on this node, per app (for metrics)."""
        waiting = self._deliveries.waiting
        return {
            app_id: sum(waiting(target) for target in targets)
            for app_id, targets in self._targets.items()
        }

    async def status(self, app_id: str) -> dict[str, Any]:
        """Delivery counters of this node, per target; ``queued`` is cluster-wide when the
        store is shared."""
        total = Stats()
        report = []
        for target in self._targets_of(app_id):
            total.add(target.stats)
            queued = await self._deliveries.queued(target)
            url = redact_url(target.config.url)
            report.append({"url": url, **target.stats.as_dict(), "queued": queued})
        return {**total.as_dict(), "targets": report}

    async def close(self) -> int:
        """Send what is held or pending, wait up to the deadline; return the events lost.

        With a durable store nothing is lost: what is not delivered by the deadline stays
        in the store and is delivered after the restart (or by another node).
        """
        await self._holds.close(self._deliveries.deadline)
        for app_id in list(self._pending):
            timer = self._flush_timers.pop(app_id, None)
            if timer is not None:
                timer.cancel()
            self._flush(app_id)
        targets = [target for targets in self._targets.values() for target in targets]
        return await self._deliveries.close(targets)
