"""Apps in a database: created, rotated and disabled through the CLI, picked up by a
running server without a restart (SQLite, and the PostgreSQL and MariaDB services)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pusher
import pytest
from pusher.errors import PusherBadAuth

from tests.support.apps_cli import cli
from tests.support.config import build_config
from tests.support.polling import eventually
from tests.support.raw import recv_json, ws_connect
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def _unavailable(service: str, exc: Exception) -> None:
    """A database service the developer may not run: skipped locally with the reason,
    required in CI (``CLARION_REQUIRE_DATABASES=1``, set by ``.ci/run``)."""
    reason = f"{service} is needed for this test: {type(exc).__name__}: {exc}"
    if os.environ.get("CLARION_REQUIRE_DATABASES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _postgres() -> Iterator[str]:
    import asyncpg

    name = f"clarion_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except Exception as exc:  # refused, no such role, ...: the service is not usable here
        _unavailable("PostgreSQL on 127.0.0.1:5432 (user postgres, no password)", exc)
    yield f"postgresql://postgres@127.0.0.1/{name}"
    asyncio.run(admin(f"DROP DATABASE {name}"))


def _mysql() -> Iterator[str]:
    import aiomysql

    name = f"clarion_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
        finally:
            conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except Exception as exc:
        _unavailable("MariaDB or MySQL on 127.0.0.1:3306 (user root, no password)", exc)
    yield f"mysql://root@127.0.0.1:3306/{name}"
    asyncio.run(admin(f"DROP DATABASE {name}"))


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/apps.db"
    elif request.param == "postgresql":
        yield from _postgres()
    else:
        yield from _mysql()


async def first_frame(server: RunningServer, key: str) -> dict[str, object]:
    ws = await ws_connect(server.ws(key))
    try:
        return await recv_json(ws)
    finally:
        await ws.close()


def test_apps_change_without_a_restart(
    store_url: str, make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    assert cli(store_url, "list").returncode == 0  # creates the table; empty
    server = make_server(build_config(apps_store={"url": store_url, "refresh_seconds": 0.2}))
    secret_file = tmp_path / "secret"
    made = cli(
        store_url,
        "create",
        "--id",
        "77",
        "--key",
        "store-key",
        "--secret-file",
        str(secret_file),
        "--set",
        "client_events=true",
    )
    assert made.returncode == 0, made.stderr
    secret = secret_file.read_text().strip()
    assert secret not in made.stdout and secret_file.stat().st_mode & 0o077 == 0
    listed = cli(store_url, "list")
    assert "77" in listed.stdout and "store-key" in listed.stdout and secret not in listed.stdout

    async def main() -> None:
        # The running server learns the new app within refresh_seconds.
        async def connects() -> bool:
            frame = await first_frame(server, "store-key")
            return frame["event"] == "pusher:connection_established"

        await eventually(connects)

        def client(key_secret: str) -> pusher.Pusher:
            return python_sdk(server, app_id="77", key="store-key", secret=key_secret)

        assert client(secret).trigger("c", "e", {}) == {}
        rotated = cli(
            store_url, "rotate-secret", "--id", "77", "--secret-file", str(tmp_path / "secret2")
        )
        assert rotated.returncode == 0, rotated.stderr
        new_secret = (tmp_path / "secret2").read_text().strip()
        assert new_secret != secret

        def old_refused() -> bool:
            try:
                client(secret).trigger("c", "e", {})
            except PusherBadAuth:
                return True
            return False

        await eventually(old_refused)
        assert client(new_secret).trigger("c", "e", {}) == {}

        assert cli(store_url, "disable", "--id", "77").returncode == 0

        async def refused_4003() -> bool:
            frame = await first_frame(server, "store-key")
            return frame["event"] == "pusher:error" and frame["data"]["code"] == 4003  # type: ignore[index]

        await eventually(refused_4003)

    asyncio.run(main())


def test_cli_refuses_bad_input(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/apps.db"
    assert cli(store, "create", "--id", "1", "--secret-file", str(tmp_path / "s")).returncode == 0
    again = cli(store, "create", "--id", "1", "--secret-file", str(tmp_path / "s2"))
    assert again.returncode == 2 and "exists" in again.stderr
    bad = cli(store, "update", "--id", "1", "--set", "activity_timeout=0")
    assert bad.returncode == 2 and "activity_timeout" in bad.stderr
    unknown = cli(store, "update", "--id", "1", "--set", "nonsense=1")
    assert unknown.returncode == 2
    missing = cli(store, "disable", "--id", "404")
    assert missing.returncode == 2 and "no app" in missing.stderr
    odd = cli("redis://nope", "list")
    assert odd.returncode == 2 and "unsupported" in odd.stderr
