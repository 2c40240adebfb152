"""The command line: ``clarion serve``, ``clarion config``, ``clarion --version`` (the
HTTP API's commands are :mod:`clarion.cli_api`'s, the apps store's :mod:`clarion.cli_apps`').

The only place that parses argv.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import urllib.request

from clarion import __version__, cli_api, cli_apps, logs
from clarion.config import ConfigError, describe, is_loopback, load
from clarion.stores import StoreError, check_driver


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clarion", description="A self-hosted realtime server speaking the Pusher protocols."
    )
    parser.add_argument("--version", action="version", version=f"clarion {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML configuration file (also CLARION_CONFIG)")
    serve.add_argument("--host", help="address to listen on (also CLARION_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (also CLARION_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (needs the redis cluster adapter)",
    )
    serve.add_argument(
        "--allow-demo-app",
        action="store_true",
        default=None,
        help="serve the demo app (its secret is public) on a non-loopback host too "
        "(also CLARION_ALLOW_DEMO_APP=1)",
    )
    commands.add_parser(
        "config",
        help="print the effective configuration as TOML (secrets replaced by <redacted>) and exit",
    ).add_argument("--config", help="TOML configuration file (also CLARION_CONFIG)")
    drain = commands.add_parser(
        "drain", help="drain a running server gracefully (SIGTERM) and wait for it to exit"
    )
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int, help="process id of the server")
    target.add_argument("--pid-file", help="the server's [server] pid_file")
    drain.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    health = commands.add_parser(
        "health", help="exit 0 if the server answers /up (for container health checks)"
    )
    health.add_argument("--url", default="http://127.0.0.1:6001/up")
    health.add_argument("--timeout", type=float, default=3.0)
    cli_apps.add_commands(commands)
    cli_api.add_commands(commands)
    return parser


def _health(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 0 if reply.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"clarion: {url}: {exc}", file=sys.stderr)
        return 1


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited child its parent has not reaped is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _drain(pid: int | None, pid_file: str | None, timeout: float) -> int:
    if pid is None:
        assert pid_file is not None
        try:
            with open(pid_file) as source:
                pid = int(source.read().strip())
        except (OSError, ValueError) as exc:
            print(f"clarion: cannot read a process id from {pid_file}: {exc}", file=sys.stderr)
            return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"clarion: no process {pid}", file=sys.stderr)
        return 1
    print(f"draining Clarion (pid {pid})...", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            print("drained", flush=True)
            return 0
        time.sleep(0.1)
    print(f"clarion: process {pid} still running after {timeout} s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "drain":
        return _drain(args.pid, args.pid_file, args.timeout)
    if args.command == "health":
        return _health(args.url, args.timeout)
    if args.command in cli_api.COMMANDS:
        return cli_api.main(args)
    if args.command == "apps":
        store_url = args.store
        if store_url is None:
            try:
                store_url = load(args.config).apps_store.url
            except ConfigError as exc:
                print(f"clarion: configuration error: {exc}", file=sys.stderr)
                return 2
        return cli_apps.main(args, store_url)
    flags = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "allow_demo_app": getattr(args, "allow_demo_app", None),
    }
    try:
        settings = load(args.config, flags=flags)
    except ConfigError as exc:
        print(f"clarion: configuration error: {exc}", file=sys.stderr)
        return 2
    workers = getattr(args, "workers", 1)
    admin_auto = (
        args.command == "serve"
        and workers == 1
        and settings.admin.token is None
        and not (args.config or os.environ.get("CLARION_CONFIG"))
        and is_loopback(settings.server.host)
        and is_loopback(settings.admin.host)
    )
    if admin_auto:
        # The embedded default (`make run`): the admin console is on, with a token made
        # now and printed as a ready-to-open URL (as Jupyter does).
        settings.admin.token = secrets.token_urlsafe(24)
    if args.command == "config":
        # stdout is TOML alone (it loads again once the secrets are put back); the banner
        # goes to stderr.
        print(f"# Clarion {__version__}, effective configuration", file=sys.stderr, flush=True)
        sys.stdout.write(describe(settings))
        return 0
    if settings.apps_store.url:
        try:
            check_driver(settings.apps_store.url)  # an extra not installed: say so first
        except StoreError as exc:
            print(f"clarion: {exc}", file=sys.stderr)
            return 2
    print(f"Clarion {__version__}, effective configuration:\n{describe(settings)}", flush=True)
    logs.setup(settings.server.log_level)
    from clarion.server.node import StartupError
    from clarion.server.serve import run
    from clarion.server.supervisor import run_workers

    if workers < 1:
        print("clarion: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and settings.cluster.adapter not in ("redis", "redis-cluster"):
        print(
            'clarion: --workers > 1 needs [cluster] adapter = "redis": worker processes share '
            "no memory, so channels, presence and fan-out must go through Redis to act as one "
            "server (set CLARION_CLUSTER_ADAPTER=redis and CLARION_REDIS_URL)",
            file=sys.stderr,
        )
        return 2
    try:
        if workers > 1:
            run_workers(settings, workers)
        else:
            run(settings, admin_optional=admin_auto)
    except StartupError as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"clarion: cannot listen on {settings.server.host}:{settings.server.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
