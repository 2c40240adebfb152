"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright
with the system browser's executable (no browser download).

:func:`launched_browser` skips, with the reason, when Chromium or Playwright is missing on
a developer's machine; CI sets CLARION_REQUIRE_BROWSER=1 (``.ci/run`` installs Chromium),
which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("CLARION_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 5000


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (make setup)"
    return None


def launched_browser() -> Iterator[Any]:
    """A Playwright ``Browser`` for a fixture to yield (closed after), or a skip."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CLARION_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (CLARION_REQUIRE_BROWSER=1): {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()
