"""The once-per-interval logger for failures a client can cause at will (logs.py)."""

from __future__ import annotations

import logging

import pytest

from clarion.logs import OncePerInterval


def test_each_kind_is_logged_once_per_interval_and_says_how_many_were_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("clarion.test-once")
    once = OncePerInterval(logger, interval=60.0)
    with caplog.at_level(logging.WARNING, logger="clarion.test-once"):
        assert once.log(logging.WARNING, "a", "first a", now=0.0)
        for second in range(1, 50):
            assert not once.log(logging.WARNING, "a", "again a", now=float(second))
        assert once.log(logging.WARNING, "b", "first b", now=10.0)
        assert once.log(logging.WARNING, "a", "a later", now=61.0)
    lines = [(r.getMessage(), r.kind, r.suppressed) for r in caplog.records]
    assert lines == [("first a", "a", 0), ("first b", "b", 0), ("a later", "a", 49)]
