"""``clarion apps``: manage the apps of an app store (a running server picks the changes
up within its ``refresh_seconds``). Secrets are never printed: a generated secret is
written to a file only its owner can read."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from typing import Any

import msgspec

from clarion.config import AppConfig, ConfigError, redact, validate_apps
from clarion.stores import AppStore, StoreError, open_store

_SETTABLE = {
    name for name in AppConfig.__struct_fields__ if name not in ("id", "key", "secret", "webhooks")
}


def add_commands(commands: Any) -> None:
    apps = commands.add_parser("apps", help="list and change the apps of an app store")
    apps.add_argument(
        "--store", help="store URL (else [apps_store] url of --config, or CLARION_APPS_STORE)"
    )
    apps.add_argument("--config", help="TOML configuration file with [apps_store] url")
    verbs = apps.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="list the apps (secrets redacted)")
    create = verbs.add_parser("create", help="create an app with a generated key and secret")
    create.add_argument("--id", required=True)
    create.add_argument("--key", help="public key (default: generated)")
    create.add_argument("--name", default="")
    create.add_argument("--secret-file", required=True, help="where to write the new secret (0600)")
    create.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    update = verbs.add_parser("update", help="change settings of an app")
    update.add_argument("--id", required=True)
    update.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", required=True)
    for verb in ("disable", "enable"):
        verbs.add_parser(verb, help=f"{verb} an app").add_argument("--id", required=True)
    rotate = verbs.add_parser("rotate-secret", help="give an app a new secret")
    rotate.add_argument("--id", required=True)
    rotate.add_argument("--secret-file", required=True, help="where to write the new secret (0600)")


def _settings(pairs: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or field not in _SETTABLE:
            raise StoreError(
                f"--set {pair!r}: expected FIELD=VALUE, FIELD one of {sorted(_SETTABLE)}"
            )
        # Values are read as TOML-ish JSON where possible (numbers, booleans), else text.
        try:
            changes[field] = msgspec.json.decode(value)
        except msgspec.DecodeError:
            changes[field] = value
    return changes


def _write_secret(path: str, secret: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode only applies to a new file: an existing one is made private too.
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret + "\n")


def _changed(app: AppConfig, changes: dict[str, Any]) -> AppConfig:
    raw = msgspec.structs.asdict(app)
    raw.update(changes)
    updated = msgspec.convert(raw, AppConfig, strict=False)
    validate_apps([updated])
    return updated


async def _run(store: AppStore, args: argparse.Namespace) -> int:
    try:
        if args.verb == "list":
            for app in await store.load():
                state = "enabled" if app.enabled else "disabled"
                print(f"{app.id}\tkey={app.key}\tsecret={redact(app.secret)}\t{state}\t{app.name}")
            return 0
        if args.verb == "create":
            secret = secrets.token_hex(20)
            raw = {
                "id": args.id,
                "key": args.key or secrets.token_hex(10),
                "secret": secret,
                "name": args.name,
            }
            app = _changed(msgspec.convert(raw, AppConfig), _settings(args.set))
            await store.upsert(app, create=True)
            _write_secret(args.secret_file, secret)  # only once the store has it
            print(f"created app {app.id} with key {app.key}; secret written to {args.secret_file}")
            return 0
        found = await store.get(args.id)
        if found is None:
            raise StoreError(f"no app {args.id!r} in the store")
        app = found
        if args.verb == "update":
            app = _changed(app, _settings(args.set))
        elif args.verb in ("disable", "enable"):
            app = _changed(app, {"enabled": args.verb == "enable"})
        elif args.verb == "rotate-secret":
            app = _changed(app, {"secret": secrets.token_hex(20)})
        await store.upsert(app, create=False)
        if args.verb == "rotate-secret":
            _write_secret(args.secret_file, app.secret)  # only once the store has it
        print(f"app {app.id}: {args.verb} done")
        return 0
    except (StoreError, ConfigError, msgspec.ValidationError) as exc:
        print(f"clarion apps: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()


def main(args: argparse.Namespace, store_url: str | None) -> int:
    if not store_url:
        print(
            "clarion apps: no store: pass --store URL, or --config with [apps_store] url",
            file=sys.stderr,
        )
        return 2
    try:
        store = open_store(store_url, create=True)
    except StoreError as exc:
        print(f"clarion apps: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(store, args))
