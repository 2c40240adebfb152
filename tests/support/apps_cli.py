"""The ``clarion apps`` command line, run as an operator would against an app store."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT


def cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", "apps", "--store", store, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
