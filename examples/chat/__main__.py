"""``python -m examples.chat``: the chat on http://127.0.0.1:8000 with Clarion embedded.

With ``--clarion-url`` (and the app's ``--app-id``/``--key``/``--secret``) it uses a
Clarion already running instead; that app needs ``client_events = true`` and, for the
webhook log, a webhook to ``{this backend}/pusher/webhooks``. See README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from examples.chat.app import PUSHER_JS, ChatSettings, create_app


def settings_from(args: argparse.Namespace) -> ChatSettings:
    backend = f"http://{args.host}:{args.port}"
    if args.clarion_url is None:
        return ChatSettings(
            clarion_port=args.clarion_port, backend_url=backend, pusher_js=args.pusher_js
        )
    url = urlsplit(args.clarion_url)
    if url.scheme != "http" or not url.hostname or args.secret is None:
        raise SystemExit(
            "--clarion-url needs http://HOST:PORT, and --secret (or CLARION_APP_SECRET)"
        )
    return ChatSettings(
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        clarion_host=url.hostname,
        clarion_port=url.port or 80,
        embedded=False,
        backend_url=backend,
        pusher_js=args.pusher_js,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chat", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="the chat's address")
    parser.add_argument("--port", type=int, default=8000, help="the chat's port")
    parser.add_argument(
        "--clarion-port", type=int, default=6001, help="the embedded Clarion's port"
    )
    parser.add_argument("--clarion-url", help="use this Clarion instead of an embedded one")
    # The same environment variables as the `clarion` CLI's HTTP API commands.
    parser.add_argument(
        "--app-id", default=os.environ.get("CLARION_APP_ID", "1"), help="also CLARION_APP_ID"
    )
    parser.add_argument(
        "--key", default=os.environ.get("CLARION_APP_KEY", "app-key"), help="also CLARION_APP_KEY"
    )
    parser.add_argument(
        "--secret", default=os.environ.get("CLARION_APP_SECRET"), help="also CLARION_APP_SECRET"
    )
    parser.add_argument("--pusher-js", type=Path, default=PUSHER_JS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    # The chat's own lines (sign-ins, the webhook log) at INFO; Clarion's and the HTTP
    # client's per-request lines only when something goes wrong.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("examples.chat").setLevel(logging.INFO)
    if not settings.pusher_js.is_file():
        raise SystemExit(f"no pusher-js at {settings.pusher_js}: run npm ci in examples/chat")
    print(f"Chat: http://{args.host}:{args.port}/  (open it in two browser windows)", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
