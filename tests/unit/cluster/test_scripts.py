"""The Lua scripts ship as package data: every file loads, and every script is registered."""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from clarion.cluster.redis import scripts

PACKAGE = resources.files(scripts.__name__)
REDIS_PACKAGE = Path(scripts.__file__).parent.parent
ROOT = REDIS_PACKAGE.parents[3]


def _lua_files() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.name.endswith(".lua"))


def test_every_lua_file_is_a_known_script_or_a_fragment() -> None:
    files = _lua_files()
    assert sorted(f"{name}.lua" for name in scripts.NAMES) == [
        f for f in files if not f.startswith("_")
    ]


@pytest.mark.parametrize("name", scripts.NAMES)
def test_every_script_loads_with_its_includes_expanded(name: str) -> None:
    text = scripts.source(name)
    assert text.strip()
    assert scripts.INCLUDE not in text
    assert "redis.call(" in text


def test_every_fragment_is_included_somewhere_and_only_by_name() -> None:
    fragments = {f for f in _lua_files() if f.startswith("_")}
    included: set[str] = set()
    for name in scripts.NAMES:
        raw = PACKAGE.joinpath(f"{name}.lua").read_text()
        included.update(re.findall(rf"^{re.escape(scripts.INCLUDE)}(\S+)$", raw, re.M))
    assert included == fragments
    for fragment in fragments:
        assert scripts.INCLUDE not in PACKAGE.joinpath(fragment).read_text()  # one level


def test_an_included_fragment_is_pasted_in_place() -> None:
    codec = PACKAGE.joinpath("_codec.lua").read_text()
    counts = PACKAGE.joinpath("_counts.lua").read_text()
    join = scripts.source("join")
    assert join.startswith(codec + counts)
    assert "local function bump(ver)" in join
    assert "local function encode(...)" in join


def test_an_unknown_script_is_refused() -> None:
    with pytest.raises(KeyError):
        scripts.source("_counts")


class FakeClient:
    def __init__(self) -> None:
        self.registered: list[str] = []

    def register_script(self, source: str) -> Any:
        self.registered.append(source)
        return source


def test_register_binds_the_expanded_source() -> None:
    client = FakeClient()
    assert scripts.register(client, "reap") == scripts.source("reap")  # type: ignore[arg-type]
    assert client.registered == [scripts.source("reap")]


def test_every_script_is_registered_by_some_redis_module() -> None:
    registered: set[str] = set()
    for module in REDIS_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "scripts"
            ):
                name = node.args[1]
                assert isinstance(name, ast.Constant)
                registered.add(name.value)
    assert registered == set(scripts.NAMES)


def test_the_scripts_are_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"clarion.cluster.redis.scripts" = ["*.lua"]' in pyproject
