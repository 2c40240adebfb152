"""Whether the native accelerator (:mod:`clarion._speedups`, C) is used, and loading it.

The extension is compiled when Clarion is installed, if a C compiler is there; without
one the install goes on without it (setup.py says so in one line) and Clarion runs the
pure-Python code that does the same, byte for byte. ``CLARION_NO_EXTENSIONS=1`` in the
environment forces that fallback even when the extension is built (CI runs the suites
that exercise fan-out both ways). Either way one line is logged, once, saying which.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger("clarion.speedups")

ENV = "CLARION_NO_EXTENSIONS"

_loaded: ModuleType | None = None
_tried = False


def disabled() -> bool:
    """True when the environment forces the pure-Python fallback."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def load() -> ModuleType | None:
    """The accelerator module, or None (disabled, or not built); logs the outcome once."""
    global _loaded, _tried
    if _tried:
        return _loaded
    _tried = True
    if disabled():
        log.info("native accelerator disabled by %s: pure-Python fan-out", ENV)
        return None
    try:
        from clarion import _speedups
    except ImportError:
        log.info("native accelerator not built (no C compiler at install?): pure-Python fan-out")
        return None
    log.info("native accelerator loaded: C fan-out")
    _loaded = _speedups
    return _loaded


def require() -> ModuleType:
    """The accelerator module, built or not, disabled or not (tests of both paths):
    raises ImportError when it is not built."""
    from clarion import _speedups

    return _speedups
