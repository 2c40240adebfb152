"""App stores: apps kept in a database, so they change without a restart.

A store holds one row per app (id, key, secret, enabled, and the other ``[[apps]]``
settings as JSON). The server reads the whole table every ``refresh_seconds`` into its
in-memory registry (lookups on the data plane never wait on the database); the CLI
(``clarion apps ...``) writes to it. SQLite (``sqlite:///path``, through aiosqlite),
PostgreSQL (``postgresql://...``, asyncpg) and MySQL / MariaDB (``mysql://...``,
aiomysql) are supported; the latter two drivers come with the ``clarion[postgres]`` and
``clarion[mysql]`` extras, and a store whose driver is missing is refused before anything
starts (:class:`MissingDriver`).
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import quote, unquote, urlparse

import msgspec

from clarion.config import AppConfig

log = logging.getLogger("clarion.stores")

TABLE = "clarion_apps"
# Columns of their own; every other AppConfig field goes into ``options`` (JSON).
_COLUMNS = ("id", "key", "secret", "enabled")


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class MissingDriver(StoreError):
    """The store's database driver is not installed; the message names the extra."""


# URL scheme -> (driver module, the extra that installs it).
_DRIVERS = {
    "postgresql": ("asyncpg", "postgres"),
    "postgres": ("asyncpg", "postgres"),
    "mysql": ("aiomysql", "mysql"),
    "mariadb": ("aiomysql", "mysql"),
}


def check_driver(url: str) -> None:
    """Raise :class:`MissingDriver` when the driver of the store at ``url`` is not
    installed (checked at start, not at the first refresh)."""
    scheme = url.partition("://")[0]
    if scheme not in _DRIVERS:
        return
    module, extra = _DRIVERS[scheme]
    if importlib.util.find_spec(module) is None:
        raise MissingDriver(
            f"the apps store {scheme}://... needs the {module} driver, which is not installed: "
            f"install Clarion with the {extra} extra (pip install 'clarion[{extra}]'; "
            f"into a pipx install: pipx inject clarion {module})"
        )


def _row(app: AppConfig) -> tuple[str, str, str, bool, str]:
    fields = msgspec.structs.asdict(app)
    options = {name: value for name, value in fields.items() if name not in _COLUMNS}
    return app.id, app.key, app.secret, app.enabled, msgspec.json.encode(options).decode()


def _app(row: tuple[Any, ...]) -> AppConfig:
    app_id, key, secret, enabled, options = row
    raw = {"id": app_id, "key": key, "secret": secret, "enabled": bool(enabled)}
    raw.update(msgspec.json.decode(options))
    return msgspec.convert(raw, AppConfig)


class AppStore(ABC):
    @abstractmethod
    async def load(self) -> list[AppConfig]:
        """Every app in the store."""

    @abstractmethod
    async def upsert(self, app: AppConfig, create: bool) -> None:
        """Write an app; with ``create`` an existing id or key is an error."""

    async def get(self, app_id: str) -> AppConfig | None:
        return next((app for app in await self.load() if app.id == app_id), None)

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class _Sql(AppStore):
    """Shared SQL; subclasses give the connection and the placeholder style."""

    placeholder = "?"

    def _sql(self, text: str) -> str:
        if self.placeholder == "?":
            return text
        parts = text.split("?")
        if self.placeholder == "%s":
            return "%s".join(parts)
        numbered = [f"{part}${index}" for index, part in enumerate(parts[:-1], start=1)]
        return "".join([*numbered, parts[-1]])

    create_table = (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id VARCHAR(64) PRIMARY KEY, "
        "app_key VARCHAR(255) NOT NULL UNIQUE, secret VARCHAR(255) NOT NULL, "
        "enabled INTEGER NOT NULL, options TEXT NOT NULL)"
    )

    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    async def load(self) -> list[AppConfig]:
        rows = await self._fetch(
            f"SELECT id, app_key, secret, enabled, options FROM {TABLE} ORDER BY id"
        )
        apps = []
        for row in rows:
            try:
                apps.append(_app(tuple(row)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # One row this version cannot read (written by a newer CLI?) must not
                # stop every other app from loading.
                log.error("apps store: app %s cannot be read (%s); ignored", row[0], exc)
        return apps

    async def upsert(self, app: AppConfig, create: bool) -> None:
        app_id, key, secret, enabled, options = _row(app)
        clash = await self._fetch(
            self._sql(f"SELECT id FROM {TABLE} WHERE app_key = ? AND id <> ?"), key, app_id
        )
        if clash:
            raise StoreError(f"key {key!r} is used by app {clash[0][0]}")
        exists = await self._fetch(self._sql(f"SELECT id FROM {TABLE} WHERE id = ?"), app_id)
        if exists and create:
            raise StoreError(f"app {app_id!r} exists already")
        if exists:
            await self._execute(
                self._sql(
                    f"UPDATE {TABLE} SET app_key = ?, secret = ?, enabled = ?, options = ? "
                    "WHERE id = ?"
                ),
                key,
                secret,
                int(enabled),
                options,
                app_id,
            )
        else:
            await self._execute(
                self._sql(
                    f"INSERT INTO {TABLE} (id, app_key, secret, enabled, options) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                app_id,
                key,
                secret,
                int(enabled),
                options,
            )


class SqliteStore(_Sql):
    """A SQLite file. Only the CLI (``create=True``) makes the file and its table: a
    server whose file was moved away gets an error, and keeps the apps it has, instead
    of a new empty store that would switch every app off."""

    def __init__(self, path: str, create: bool = False) -> None:
        self.path = path
        self.create = create

    def _connect(self) -> Any:
        import aiosqlite

        if self.create or self.path == ":memory:":
            return aiosqlite.connect(self.path)
        # mode=rw: open an existing file, never create one.
        return aiosqlite.connect(f"file:{quote(self.path)}?mode=rw", uri=True)

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self._connect() as db:
            if self.create:
                await db.execute(self.create_table)
            async with db.execute(sql, args) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]

    async def _execute(self, sql: str, *args: Any) -> None:
        async with self._connect() as db:
            if self.create:
                await db.execute(self.create_table)
            await db.execute(sql, args)
            await db.commit()


class PostgresStore(_Sql):
    placeholder = "$"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    async def _connect(self) -> Any:
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2)
            await self._pool.execute(self.create_table)
        return self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        pool = await self._connect()
        return [tuple(row) for row in await pool.fetch(sql, *args)]

    async def _execute(self, sql: str, *args: Any) -> None:
        pool = await self._connect()
        await pool.execute(sql, *args)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class MysqlStore(_Sql):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.options = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 3306,
            "user": unquote(parsed.username or "root"),
            "password": unquote(parsed.password or ""),
            "db": parsed.path.lstrip("/") or "clarion",
            "autocommit": True,
        }
        self._pool: Any = None

    async def _connect(self) -> Any:
        if self._pool is None:
            import aiomysql

            self._pool = await aiomysql.create_pool(minsize=1, maxsize=2, **self.options)
            await self._execute(self.create_table)
        return self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        pool = await self._connect()
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return [tuple(row) for row in await cursor.fetchall()]

    async def _execute(self, sql: str, *args: Any) -> None:
        pool = self._pool if self._pool is not None else await self._connect()
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(sql, args)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()


def open_store(url: str, create: bool = False) -> AppStore:
    """The store at ``url``; ``create``: make a SQLite file and table that do not exist
    (the CLI), never done for a server. Raises :class:`MissingDriver` when the store's
    driver (an extra) is not installed."""
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///") :] or ":memory:", create)
    check_driver(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith(("mysql://", "mariadb://")):
        return MysqlStore(url)
    raise StoreError(
        f"unsupported apps store {url!r}: use sqlite:///path, postgresql://... or mysql://..."
    )
