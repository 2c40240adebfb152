"""Prometheus metrics, served on their own port.

Names are ``clarion_*`` and every label has a bounded set of values (app id, close code,
endpoint, status, outcome): never a channel name or a user id. Hot paths pay at most a
counter increment per message or per publish, never per delivered frame; current sizes
(connections, channels, subscriptions, webhook queues) are read at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString


class PlainCount:
    """One labelled child of a :class:`PlainCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class PlainCounter(Collector):
    """A labelled counter for a hot path (a connect, every client message): ``inc`` is
    one addition, where prometheus_client's takes a lock behind three Python calls.
    Exported as an ordinary counter (``_total``) at scrape time; one event loop writes
    it."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], PlainCount] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> PlainCount:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = PlainCount()
        return child

    def collect(self) -> Iterable[Any]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


connections_opened = PlainCounter(
    "clarion_connections_opened", "WebSocket connections accepted", ["app"]
)
connections_closed = Counter(
    "clarion_connections_closed",
    "WebSocket connections closed, by close code (abnormal: no close frame)",
    ["app", "code"],
)
connections_refused = Counter(
    "clarion_connections_refused", "WebSocket connections refused at the handshake", ["code"]
)
messages_received = PlainCounter(
    "clarion_messages_received", "WebSocket messages received from clients", ["app"]
)
bytes_received = PlainCounter(
    "clarion_received_bytes", "Bytes of WebSocket messages received from clients", ["app"]
)
messages_sent = Counter(
    "clarion_messages_sent", "Frames written to subscribers by fan-out", ["app"]
)
bytes_sent = Counter("clarion_sent_bytes", "Bytes written to subscribers by fan-out", ["app"])
# HTTP API requests by (endpoint, status): a plain dict on the request path (no lock),
# exported at scrape time by the collector below.
http_requests: dict[tuple[str, int], int] = {}


class PlainHistogram(Collector):
    """A histogram without labels for a hot path: ``observe`` is a bisect and two plain
    additions (prometheus_client's takes a lock per bucket and the sum, several times
    the cost of a whole step of the publish path). Exported as an ordinary histogram
    (``_bucket``, ``_sum``, ``_count``) at scrape time; one event loop writes it."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(buckets)
        # One count per bound, and the last for what is above them all (+Inf).
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        REGISTRY.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterable[Any]:
        counts, total = list(self._counts), self._sum
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*map(floatToGoString, self._bounds), "+Inf"), counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self._name, self._documentation, buckets, total)


publish_seconds = PlainHistogram(
    "clarion_publish_seconds",
    "From an HTTP publish request to its frames written on this node",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
fanout_size = Histogram(
    "clarion_fanout_subscribers",
    "Local subscribers written to per frame",
    buckets=(0, 1, 10, 100, 1000, 10000, 100000),
)
slow_consumers = Counter(
    "clarion_slow_consumer_disconnects",
    "Subscribers closed because their write buffer went over the bound",
    ["app"],
)
flood_disconnects = Counter(
    "clarion_flood_disconnects",
    "WebSocket connections closed (4100) for sending frames faster than "
    "[server] max_messages_per_second",
    ["app"],
)
sockets_dropped = Counter(
    "clarion_http_sockets_dropped",
    "Sockets closed before finishing a request: head_timeout (no complete head within "
    "[server] head_timeout), unfinished_heads (over max_unfinished_heads_per_ip), "
    "file_limit (closed to make room at the open-file limit)",
    ["reason"],
)
file_limit_sockets = Counter(
    "clarion_file_limit_sockets",
    "Sockets accepted into the reserved file descriptors (the open-file limit is near): "
    "served HTTP only",
)
webhook_deliveries = Counter(
    "clarion_webhook_deliveries",
    "Webhook requests by outcome (sent, failed attempt, events dropped)",
    ["app", "outcome"],
)
_redis: tuple[Gauge, Histogram] | None = None


def redis_metrics() -> tuple[Gauge, Histogram]:
    """The Redis link's health gauge and round-trip histogram, registered only when the
    Redis adapter is in use (a single node would otherwise report Redis as down)."""
    global _redis
    if _redis is None:
        _redis = (
            Gauge("clarion_redis_up", "1 when the Redis cluster link is up"),
            Histogram(
                "clarion_redis_roundtrip_seconds",
                "Round trip of the Redis health check",
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
            ),
        )
    return _redis


_cluster_dropped: Counter | None = None


def cluster_frames_dropped() -> Counter:
    """Frames not sent to the other nodes because the queue to Redis was full (a Redis
    that stopped answering); registered only with the Redis adapter."""
    global _cluster_dropped
    if _cluster_dropped is None:
        _cluster_dropped = Counter(
            "clarion_cluster_frames_dropped",
            "Client events and internal frames not sent to other nodes: the queue to "
            "Redis was over its byte bound",
        )
    return _cluster_dropped


loop_lag = Gauge("clarion_event_loop_lag_seconds", "How late the event loop ran a timer")


class StateCollector(Collector):
    """Sizes read at scrape time from callbacks, so the data plane counts nothing."""

    def __init__(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily(
            "clarion_http_requests",
            "HTTP API requests, by endpoint and status",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), count in list(http_requests.items()):
            requests.add_metric([endpoint, str(status)], count)
        yield requests
        sizes = self._read()
        for name, help_text in (
            ("connections", "Open WebSocket connections"),
            ("channels", "Channels with local subscribers"),
            ("subscriptions", "Local channel subscriptions"),
            ("webhook_queue", "Webhook requests waiting or in flight"),
        ):
            family = GaugeMetricFamily(f"clarion_{name}", help_text, labels=["app"])
            for app_id, value in sizes.get(name, {}).items():
                family.add_metric([app_id], value)
            yield family


_collector: StateCollector | None = None


def watch_state(read: Callable[[], dict[str, dict[str, int]]]) -> None:
    """Register (once per process) the callback that reports current sizes."""
    global _collector
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = StateCollector(read)
    REGISTRY.register(_collector)
