"""The TOML configs test servers start with, built from keyword arguments and app dicts.

``build_config`` is the one place that writes Clarion's config format for the tests, so a
test says only what it changes (``app(max_connections=1)``, ``server={...}``) and no
TOML text is copied from one test file to the next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

Table = Mapping[str, Any]


def app(
    id: str = "1", key: str = "app-key", secret: str = "app-secret", **settings: Any
) -> dict[str, Any]:
    """One ``[[apps]]`` entry: app 1 with the tests' usual credentials unless told otherwise.

    ``settings`` are the app's other keys; ``webhooks=[{"url": ..., "event_types": [...]}]``
    becomes its ``[[apps.webhooks]]`` targets.
    """
    return {"id": id, "key": key, "secret": secret, **settings}


# The apps of the session's shared server (``tests.support.server.DEFAULT_CONFIG``).
OTHER_APP = app("2", "other-key", "other-secret")
DISABLED_APP = app("3", "disabled-key", "disabled-secret", enabled=False)
QUOTA_APP = app("4", "quota-key", "quota-secret", max_connections=2)


def build_config(
    *apps: Table,
    server: Table | None = None,
    webhooks: Table | None = None,
    cluster: Table | None = None,
    metrics: Table | None = None,
    apps_store: Table | None = None,
    admin: Table | None = None,
) -> str:
    """The text of a config file: the given tables, then one ``[[apps]]`` per app, in order.

    With no app the file has no ``[[apps]]`` (an app store, say, provides them).
    """
    parts = [
        _table(name, table)
        for name, table in (
            ("server", server),
            ("webhooks", webhooks),
            ("cluster", cluster),
            ("metrics", metrics),
            ("apps_store", apps_store),
            ("admin", admin),
        )
        if table is not None
    ]
    parts.extend(_table("apps", entry, array=True) for entry in apps)
    return "\n".join(parts)


def _table(name: str, table: Table, array: bool = False) -> str:
    lines = [f"[[{name}]]" if array else f"[{name}]"]
    nested: list[str] = []
    for key, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            nested.extend(_table(f"{name}.{key}", item, array=True) for item in value)
        elif isinstance(value, Mapping):
            nested.append(_table(f"{name}.{key}", value))
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join([*lines, "", *nested])


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | PurePath):
        return json.dumps(str(value))  # a TOML basic string: the same escapes as JSON's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
