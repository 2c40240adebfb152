"""The command line: ``clarion serve``, ``clarion config``, ``clarion --version``.

The only place that parses argv.
"""

from __future__ import annotations

import argparse
import logging
import sys

from clarion import __version__
from clarion.config import ConfigError, describe, load


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
    commands.add_parser("config", help="print the effective configuration and exit").add_argument(
        "--config", help="TOML configuration file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    flags = {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}
    try:
        settings = load(args.config, flags=flags)
    except ConfigError as exc:
        print(f"clarion: configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"Clarion {__version__}, effective configuration:\n{describe(settings)}\n", flush=True)
    if args.command == "config":
        return 0
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from clarion.server.listener import run, run_workers

    workers = getattr(args, "workers", 1)
    if workers < 1:
        print("clarion: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and settings.cluster.adapter != "redis":
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
            run(settings)
    except OSError as exc:
        print(
            f"clarion: cannot listen on {settings.server.host}:{settings.server.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
