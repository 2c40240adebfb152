"""The native accelerator (src/clarion/_speedups.c), built at install if it can be.

Everything else about the package is in pyproject.toml. The extension is optional: with
no C compiler (or Python headers) the build says so in one line and goes on, and
Clarion runs its pure-Python fallback (clarion.speedups). CLARION_NO_EXTENSIONS=1 at
build time skips the extension altogether.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into one line and no extension."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)

    def _skipped(self, exc: Exception) -> None:
        reason = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
        print(
            f"clarion: the C accelerator was not built ({reason[0]}); "
            "the pure-Python fallback will be used",
            file=sys.stderr,
        )


disabled = os.environ.get("CLARION_NO_EXTENSIONS", "").strip().lower() not in (
    "", "0", "false", "no"
)
extensions = (
    []
    if disabled
    else [Extension("clarion._speedups", ["src/clarion/_speedups.c"], optional=True)]
)

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
