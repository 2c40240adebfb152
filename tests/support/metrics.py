"""Reading a test server's Prometheus metrics.

The server prints where its metrics are; the tests set CLARION_METRICS_PORT=0, so each
test server has its own free port.
"""

from __future__ import annotations

import re
import time
import urllib.request

from tests.support.server import RunningServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_METRICS_LINE = re.compile(r"Clarion metrics on (http://[\d.]+:\d+/metrics)")


def metrics_url(server: RunningServer) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(server.output):
            match = _METRICS_LINE.search(line)
            if match:
                return match.group(1)
        time.sleep(0.02)
    raise AssertionError("no 'Clarion metrics on ...' line:\n" + "".join(server.output))


def scrape(url: str) -> tuple[str, Samples]:
    """The exposition text and every sample in it, keyed by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
