"""The Lua scripts of the Redis cluster state, shipped beside this module as ``*.lua``.

Each ``name.lua`` is one script, run with EVALSHA (``register()``). A file whose name
starts with ``_`` is a fragment, never run alone: a script pulls it in with a line
``--!include _name.lua`` at the top, which the loader replaces by the fragment's text
(one level: fragments include nothing).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

# Every script, by file name without ".lua".
NAMES = (
    "cluster_heartbeat",
    "cluster_rejoin",
    "count_turn",
    "heartbeat",
    "held_release",
    "held_take",
    "job_add",
    "job_claim",
    "job_done",
    "join",
    "leave",
    "rate",
    "reap",
    "reap_share",
    "register",
    "register_share",
    "sign",
)

INCLUDE = "--!include "


def _read(file_name: str) -> str:
    return resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8")


@functools.cache
def source(name: str) -> str:
    """The text of script ``name``, its includes expanded."""
    if name not in NAMES:
        raise KeyError(f"no Lua script named {name!r}")
    lines = []
    for line in _read(f"{name}.lua").splitlines(keepends=True):
        if line.startswith(INCLUDE):
            lines.append(_read(line[len(INCLUDE) :].strip()))
        else:
            lines.append(line)
    return "".join(lines)


def register(client: aioredis.Redis, name: str) -> Any:
    """Script ``name`` bound to ``client``: call it with ``keys=`` and ``args=``."""
    return client.register_script(source(name))
