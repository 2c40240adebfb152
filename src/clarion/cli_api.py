"""The HTTP API from the command line: ``clarion trigger``, ``channels``, ``channel``,
``users`` and ``tail``, signed with an app's key and secret.

The app and the server are found in this order: ``--url``/``--app-id``/``--key``/
``--secret``; the environment (``CLARION_APP_ID``/``KEY``/``SECRET``, ``CLARION_HOST``/
``PORT``, ``CLARION_CONFIG``); the ``--config`` file (its first app, or ``--app-id``'s).
A request the server refuses exits 1 with one line: the status and the server's error.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from clarion.config import ConfigError, load
from clarion.protocol.signing import channel_auth_string, sign, string_to_sign

COMMANDS = ("trigger", "channels", "channel", "users", "tail")
TIMEOUT = 10.0


class Failure(Exception):
    """A command failed; the message is the one line printed (exit code 1)."""


@dataclass(frozen=True)
class Target:
    """The server's base URL and the app whose key and secret sign requests."""

    url: str
    app_id: str
    key: str
    secret: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


def add_commands(commands: Any) -> None:
    """Add the HTTP API commands to ``clarion``'s subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("server and app")
    where.add_argument("--config", help="TOML configuration file (also CLARION_CONFIG)")
    where.add_argument("--url", help="the server's base URL, e.g. http://127.0.0.1:6001")
    where.add_argument("--app-id", help="the app (also CLARION_APP_ID)")
    where.add_argument("--key", help="the app's key (also CLARION_APP_KEY)")
    where.add_argument("--secret", help="the app's secret (also CLARION_APP_SECRET)")

    trigger = commands.add_parser(
        "trigger",
        parents=[common],
        help="publish an event",
        usage="clarion trigger [options] CHANNEL EVENT [DATA]\n"
        "       clarion trigger [options] --channels a,b EVENT [DATA]",
    )
    # CHANNEL EVENT [DATA], or EVENT [DATA] with --channels: sorted out in _request.
    trigger.add_argument(
        "words", nargs="+", metavar="ARG", help="CHANNEL EVENT [DATA] (DATA: a string, default {})"
    )
    trigger.add_argument("--channels", help="comma-separated channels to publish on")
    trigger.add_argument("--exclude", metavar="SOCKET_ID", help="socket id not to send to")
    trigger.add_argument("--info", help="attributes to return: user_count,subscription_count")

    channels = commands.add_parser("channels", parents=[common], help="list occupied channels")
    channels.add_argument("--prefix", help="only channels whose name starts with this")
    channels.add_argument("--info", help="attributes per channel, e.g. user_count")

    channel = commands.add_parser("channel", parents=[common], help="one channel's state")
    channel.add_argument("name")
    channel.add_argument(
        "--info", default="subscription_count", help="attributes (default subscription_count)"
    )

    users = commands.add_parser("users", parents=[common], help="a presence channel's users")
    users.add_argument("name")

    tail = commands.add_parser(
        "tail", parents=[common], help="subscribe and print one JSON line per event"
    )
    tail.add_argument("channels", nargs="+", metavar="CHANNEL")
    tail.add_argument("--user-id", default="clarion-tail", help="member id on presence channels")


def main(args: argparse.Namespace) -> int:
    try:
        target = resolve(args)
    except ConfigError as exc:
        print(f"clarion: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "tail":
            try:
                asyncio.run(tail(target, args.channels, args.user_id))
            except KeyboardInterrupt:
                return 0  # Ctrl-C: the way a tail ends
            return 1  # the server closed the connection
        answer = _request(target, args)
    except Failure as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def resolve(args: argparse.Namespace) -> Target:
    """The server and app the command talks to (flags, then environment, then file)."""
    settings = load(args.config)
    apps = settings.apps
    if args.app_id is not None:
        apps = [app for app in apps if app.id == args.app_id]
    app = apps[0] if apps else None
    app_id = args.app_id or (app.id if app else None)
    key = args.key or (app.key if app else None)
    secret = args.secret or (app.secret if app else None)
    if not (app_id and key and secret):
        raise ConfigError(
            "no app to sign with: give --app-id, --key and --secret "
            "(or CLARION_APP_ID/KEY/SECRET, or an [[apps]] entry in --config)"
        )
    url = args.url
    if url is None:
        server = settings.server
        host = server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        url = f"{'https' if server.tls_cert else 'http'}://{host}:{server.port}"
    return Target(url.rstrip("/"), app_id, key, secret)


def _request(target: Target, args: argparse.Namespace) -> Any:
    path = f"/apps/{quote(target.app_id, safe='')}"
    params: dict[str, str] = {}
    body = b""
    if args.command == "trigger":
        words = list(args.words)
        channels = [name for name in (args.channels or "").split(",") if name]
        if not channels:
            channels.append(words.pop(0))
        if not 1 <= len(words) <= 2:
            raise Failure("usage: clarion trigger CHANNEL EVENT [DATA] (or --channels a,b EVENT)")
        name, data = words[0], words[1] if len(words) == 2 else "{}"
        event: dict[str, Any] = {"name": name, "channels": channels, "data": data}
        if args.exclude:
            event["socket_id"] = args.exclude
        if args.info:
            event["info"] = args.info
        body = json.dumps(event).encode()
        path += "/events"
    elif args.command == "channels":
        path += "/channels"
        if args.prefix:
            params["filter_by_prefix"] = args.prefix
        if args.info:
            params["info"] = args.info
    elif args.command == "channel":
        path += f"/channels/{_segment(args.name)}"
        if args.info:
            params["info"] = args.info
    else:
        path += f"/channels/{_segment(args.name)}/users"
    return call(target, "POST" if body else "GET", path, params, body)


def _segment(name: str) -> str:
    # Channel names' own characters (=@,.;-_) are sent as they are; anything else encoded.
    return quote(name, safe="=@,.;-_")


def call(target: Target, method: str, path: str, params: dict[str, str], body: bytes) -> Any:
    """Send one signed request; its decoded JSON answer, or Failure."""
    import httpx

    signed = {
        **params,
        "auth_key": target.key,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
    }
    if body:
        signed["body_md5"] = hashlib.md5(body).hexdigest()
    signed["auth_signature"] = sign(target.secret, string_to_sign(method, path, signed))
    try:
        reply = httpx.request(
            method,
            target.url + path,
            params=signed,
            content=body or None,
            headers={"Content-Type": "application/json"} if body else None,
            timeout=TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise Failure(f"{target.url}: {exc or type(exc).__name__}") from None
    if reply.status_code != 200:
        raise Failure(f"HTTP {reply.status_code}: {_error_text(reply.text)}")
    try:
        return reply.json()
    except ValueError:
        return reply.text


def _error_text(text: str) -> str:
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        error = text
    return " ".join(str(error).split()) or "(no error text)"


# --- tail -----------------------------------------------------------------------------


async def tail(target: Target, channels: list[str], user_id: str) -> None:
    """Subscribe to ``channels`` and print each event as one JSON line on stdout (what
    happens to the subscriptions goes to stderr), until interrupted or disconnected."""
    try:
        await _tail(target, channels, user_id)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise Failure(f"{target.ws_url}: {exc or type(exc).__name__}") from None


async def _tail(target: Target, channels: list[str], user_id: str) -> None:
    url = f"{target.ws_url}/app/{quote(target.key, safe='')}?protocol=7&client=clarion-cli"
    url += "&version=1.0"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        established = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if established.get("event") != "pusher:connection_established":
            raise Failure(f"connection refused: {json.dumps(established)}")
        socket_id = json.loads(established["data"])["socket_id"]
        member = {"user_id": user_id}
        for channel in channels:
            frame = subscribe_frame(target.key, target.secret, socket_id, channel, member)
            await ws.send(json.dumps(frame))
        async for raw in ws:
            message = json.loads(raw)
            event = message.get("event", "")
            if event == "pusher:ping":
                await ws.send('{"event":"pusher:pong","data":{}}')
            elif event == "pusher_internal:subscription_succeeded":
                print(f"subscribed to {message.get('channel')}", file=sys.stderr, flush=True)
            elif event == "pusher:subscription_error":
                # Watching fewer channels than asked without noticing is worse than stopping.
                raise Failure(f"{message.get('channel')}: refused: {message.get('data')}")
            elif event == "pusher:error":
                print(f"clarion: {event}: {message.get('data')}", file=sys.stderr, flush=True)
            elif not event.startswith("pusher:"):
                line = {"event": event, "channel": message.get("channel")}
                line["data"] = message.get("data")
                print(json.dumps(line), flush=True)
        print(f"clarion: connection closed: {ws.close_code} {ws.close_reason}", file=sys.stderr)


def subscribe_frame(
    key: str, secret: str, socket_id: str, channel: str, member: dict[str, Any]
) -> dict[str, Any]:
    """The ``pusher:subscribe`` frame for ``channel``, signed here as an app's auth
    endpoint would sign it when the channel is private or presence (``member``: the
    presence member, ``{"user_id": ..., "user_info": ...}``). Also the pytest plugin's."""
    data: dict[str, Any] = {"channel": channel}
    channel_data = None
    if channel.startswith("presence-"):
        channel_data = json.dumps(member)
        data["channel_data"] = channel_data
    if channel.startswith(("private-", "presence-")):
        signature = sign(secret, channel_auth_string(socket_id, channel, channel_data))
        data["auth"] = f"{key}:{signature}"
    return {"event": "pusher:subscribe", "data": data}
