"""The hot-path histogram and counter: exported as prometheus_client exports its own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from clarion import metrics
from clarion.metrics import PlainCounter, PlainHistogram

BUCKETS = (0.001, 0.01, 1.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("h_") and "_created" not in line
    ]


def test_plain_histogram_exports_what_a_prometheus_histogram_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Registered on a registry of its own here, not the process's.
    monkeypatch.setattr(metrics, "REGISTRY", CollectorRegistry())
    plain = PlainHistogram("h", "help", BUCKETS)
    ours = CollectorRegistry()
    ours.register(plain)
    theirs = CollectorRegistry()
    reference = Histogram("h", "help", buckets=BUCKETS, registry=theirs)
    # On a bound (le is inclusive), between, above all, and zero.
    for amount in (0.001, 0.0005, 0.5, 1.0, 2.5, 0.0, 0.01):
        plain.observe(amount)
        reference.observe(amount)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("h_count") == 7
    assert ours.get_sample_value("h_bucket", {"le": "0.001"}) == 3


def test_plain_counter_exports_what_a_prometheus_counter_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "REGISTRY", CollectorRegistry())
    plain = PlainCounter("h_things", "help", ["app"])
    ours = CollectorRegistry()
    ours.register(plain)
    theirs = CollectorRegistry()
    reference = Counter("h_things", "help", ["app"], registry=theirs)
    for app, amount in (("1", 1), ("2", 5), ("1", 3)):
        plain.labels(app).inc(amount)
        reference.labels(app).inc(amount)
    plain.labels("1").inc()
    reference.labels("1").inc()
    assert plain.labels("1") is plain.labels("1")  # one child per label values
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("h_things_total", {"app": "1"}) == 5
