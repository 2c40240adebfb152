"""Clarion as a Python package: the wheel and sdist that ``python -m build`` makes, installed
without extras into a fresh virtualenv as ``pipx install`` would, serve on their own; a
store whose driver is an extra not installed is refused at start, naming the extra.

Installing needs the package index (dependencies are fetched): without it this is skipped
with the reason locally, and fails in CI (``CLARION_REQUIRE_PACKAGE_INDEX=1``, set by
``.ci/run``).
"""

from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from clarion import __version__
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(600)

_LISTENING = re.compile(r"Clarion listening on http://([\d.]+):(\d+)")


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _require_index() -> None:
    """Skip (locally) or fail (in CI) when pip cannot reach its package index."""
    probe = _run(sys.executable, "-m", "pip", "index", "versions", "setuptools", timeout=120)
    if probe.returncode == 0:
        return
    reason = (
        "the package index is needed to build and install the wheel: "
        + (probe.stderr.strip().splitlines() or ["pip index failed"])[-1]
    )
    if os.environ.get("CLARION_REQUIRE_PACKAGE_INDEX") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Installed:
    wheel: Path
    sdist: Path
    venv: Path

    @property
    def clarion(self) -> Path:
        return self.venv / "bin" / "clarion"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    _require_index()
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    # No flags: the sdist first, then the wheel built from that sdist (so the sdist is
    # complete enough to build from).
    built = _run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("clarion-*.whl")
    (sdist,) = dist.glob("clarion-*.tar.gz")
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    # The wheel alone, no extras: what `pipx install clarion-....whl` gives.
    pip = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, timeout=500)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return Installed(wheel, sdist, venv)


def test_wheel_and_sdist_carry_the_version_license_and_ranges(installed: Installed) -> None:
    assert installed.wheel.name.startswith(f"clarion-{__version__}-")
    assert installed.sdist.name == f"clarion-{__version__}.tar.gz"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = email.message_from_bytes(wheel.read(f"clarion-{__version__}.dist-info/METADATA"))
    assert f"clarion-{__version__}.dist-info/licenses/LICENSE" in names
    assert any(name.startswith("clarion/cluster/redis/scripts/") for name in names)
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert {"postgres", "mysql", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    requires = metadata.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    # Ranges, not pins, so Clarion installs beside an application's own packages; and no
    # database server driver among the core dependencies.
    assert core and not [r for r in requires if "==" in r.split(";")[0]]
    assert not [r for r in core if r.startswith(("asyncpg", "aiomysql"))]
    assert any(r.startswith("asyncpg") and 'extra == "postgres"' in r for r in requires)
    assert any(r.startswith("aiomysql") and 'extra == "mysql"' in r for r in requires)
    with tarfile.open(installed.sdist) as sdist:
        members = {
            Path(name).relative_to(f"clarion-{__version__}").as_posix()
            for name in sdist.getnames()
            if "/" in name
        }
    assert {"LICENSE", "README.md", "pyproject.toml", "src/clarion/__init__.py"} <= members
    # The accelerator's source, so that an install from the sdist builds it.
    assert {"setup.py", "src/clarion/_speedups.c", "src/clarion/_speedups.pyi"} <= members
    # Built with this machine's C compiler: the wheel holds it and the install loads it.
    assert any(re.fullmatch(r"clarion/_speedups\..*\.so", name) for name in names)
    assert "clarion/_speedups.pyi" in names
    loaded = _run(installed.python, "-c", "from clarion import _speedups; print(_speedups.queue)")
    assert loaded.returncode == 0, loaded.stderr


def test_without_a_c_compiler_the_build_goes_on_with_one_line_and_no_extension(
    tmp_path: Path,
) -> None:
    """No index needed: setup.py's build_ext alone, with a compiler that is not there."""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "LDSHARED": str(tmp_path / "no-ld")}
    env.pop("CLARION_NO_EXTENSIONS", None)
    built = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext",
         "--build-lib", str(tmp_path / "lib"), "--build-temp", str(tmp_path / "temp")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    said = [line for line in built.stderr.splitlines() if line.startswith("clarion:")]
    assert len(said) == 1, built.stderr
    assert "the pure-Python fallback will be used" in said[0]
    assert not list(tmp_path.rglob("_speedups*.so"))


def test_installed_without_extras_clarion_serves(installed: Installed, tmp_path: Path) -> None:
    for driver in ("asyncpg", "aiomysql"):
        found = _run(installed.python, "-c", f"import {driver}")
        assert found.returncode != 0, f"{driver} is installed without its extra"
    version = _run(installed.clarion, "--version")
    assert version.stdout.strip() == f"clarion {__version__}"
    process = subprocess.Popen(
        [str(installed.clarion), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,  # not the repository: the installed package, not ./src
        env={
            "PATH": os.environ.get("PATH", ""),
            "CLARION_METRICS_PORT": "0",
            "CLARION_DRAIN_WINDOW": "0",
            "PYTHONUNBUFFERED": "1",
        },
    )
    try:
        assert process.stdout is not None
        output: list[str] = []
        deadline = time.monotonic() + 30
        match = None
        while match is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            match = _LISTENING.search(line)
        assert match, "".join(output)
        url = f"http://{match.group(1)}:{match.group(2)}/up"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
            assert json.loads(reply.read()) == {"ok": True}
        health = _run(installed.clarion, "health", "--url", url)
        assert health.returncode == 0, health.stderr
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("postgresql://clarion@127.0.0.1:1/apps", "postgres"),
        ("mysql://clarion@127.0.0.1:1/apps", "mysql"),
    ],
)
def test_a_store_whose_driver_is_missing_stops_the_start_naming_the_extra(
    installed: Installed, tmp_path: Path, url: str, extra: str
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CLARION_APPS_STORE": url}
    started = subprocess.run(
        [str(installed.clarion), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "CLARION_METRICS_PORT": "0"},
    )
    assert started.returncode == 2, started.stdout + started.stderr
    assert f"pip install 'clarion[{extra}]'" in started.stderr
    assert "Traceback" not in started.stderr
    listed = subprocess.run(
        [str(installed.clarion), "apps", "--store", url, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert listed.returncode == 2, listed.stdout + listed.stderr
    assert f"clarion[{extra}]" in listed.stderr


def test_check_driver_names_the_extra_of_each_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the index too: each database scheme maps to its driver and extra."""
    import importlib.util

    from clarion import stores

    missing = {"asyncpg", "aiomysql"}
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    for url, extra in [
        ("postgresql://h/db", "postgres"),
        ("postgres://h/db", "postgres"),
        ("mysql://h/db", "mysql"),
        ("mariadb://h/db", "mysql"),
    ]:
        with pytest.raises(stores.MissingDriver, match=re.escape(f"clarion[{extra}]")):
            stores.open_store(url)
    stores.check_driver("sqlite:///apps.db")  # SQLite is the standard library's
