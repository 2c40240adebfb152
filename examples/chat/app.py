"""The chat's backend: :func:`create_app` builds the FastAPI application.

It owns who is signed in (a name, kept with a random user id in Starlette's signed session
cookie), who may subscribe to what (``/pusher/auth``, signed with the official ``pusher``
SDK: the presence room for anyone signed in, ``private-user-{id}`` for that user only),
the messages (``POST /api/messages``, triggered on the room through Clarion's HTTP API)
and the webhook endpoint (``/pusher/webhooks``: signature checked by the SDK,
``member_added``/``member_removed`` logged). With ``ChatSettings.embedded`` the app's
lifespan runs a :class:`clarion.Server` in the same event loop.

Everything a browser sends is read with a byte limit and checked before use: a client can
neither hold the server with a large body nor make it answer success for work not done.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pusher
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

import clarion

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# `npm ci` in examples/chat installs the pinned pusher-js (package-lock.json) here.
PUSHER_JS = HERE / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"

ROOM = "presence-chat"
PRIVATE_PREFIX = "private-user-"
MAX_NAME = 32
MAX_TEXT = 500
# Bodies the browser sends are tiny; a webhook request carries a batch of events.
MAX_FORM_BYTES = 4096
MAX_WEBHOOK_BYTES = 256 * 1024
WEBHOOK_LOG_SIZE = 200

log = logging.getLogger("examples.chat")


@dataclass(frozen=True)
class ChatSettings:
    """Where Clarion is and which app the chat uses; the defaults run an embedded one."""

    app_id: str = "1"
    key: str = "chat-key"
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    clarion_host: str = "127.0.0.1"
    clarion_port: int = 6001
    # True: the lifespan starts Clarion (clarion_port 0 picks a free port). False: the
    # chat uses a Clarion already running at clarion_host:clarion_port with this app.
    embedded: bool = True
    # The backend's own base URL, for the embedded Clarion's webhook target.
    backend_url: str = "http://127.0.0.1:8000"
    # Seconds Clarion holds member_removed back (a page reload then logs nothing).
    webhook_delay: float = 3.0
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    pusher_js: Path = PUSHER_JS

    def clarion_app(self) -> dict[str, Any]:
        """The embedded Clarion's app: client events on (typing), the two member webhooks."""
        return {
            "id": self.app_id,
            "key": self.key,
            "secret": self.secret,
            "name": "Example chat",
            "client_events": True,
            "webhook_delay": self.webhook_delay,
            "webhooks": [
                {
                    "url": f"{self.backend_url}/pusher/webhooks",
                    "event_types": ["member_added", "member_removed"],
                }
            ],
        }


def _use_clarion(app: FastAPI, settings: ChatSettings, host: str, port: int) -> None:
    """Point the app (its SDK client, the page's pusher-js options) at Clarion."""
    app.state.clarion_at = (host, port)
    app.state.pusher = pusher.Pusher(
        app_id=settings.app_id,
        key=settings.key,
        secret=settings.secret,
        host=host,
        port=port,
        ssl=False,
        timeout=5,
    )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        parsed = json.loads(await _body(request, MAX_FORM_BYTES))
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise HTTPException(400, "the body is not a JSON object")
    return parsed


def _clean_text(value: Any, limit: int, what: str) -> str:
    """``value`` as one line of printable text, 1 to ``limit`` characters, or 422."""
    if not isinstance(value, str):
        raise HTTPException(422, f"{what} must be text")
    # Control and format characters (newlines, bidi overrides) have no place in a name or
    # a chat line; whitespace runs become one space.
    printable = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in value)
    text = re.sub(r" +", " ", printable).strip()
    if not text:
        raise HTTPException(422, f"{what} is empty")
    if len(text) > limit:
        raise HTTPException(422, f"{what} is longer than {limit} characters")
    return text


def _user(request: Request) -> dict[str, str] | None:
    user = request.session.get("user")
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return {"id": user["id"], "name": str(user.get("name", ""))}
    return None


def _signed_in(request: Request) -> dict[str, str]:
    user = _user(request)
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    """The chat application; its lifespan starts the embedded Clarion when asked to."""
    settings = settings or ChatSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.embedded:
            yield
            return
        server = clarion.Server(
            host=settings.clarion_host,
            port=settings.clarion_port,
            apps=[settings.clarion_app()],
            # uvicorn runs the lifespan's exit after it stopped listening: the webhooks
            # still pending then (members online at Ctrl-C) have nowhere to go.
            webhooks={"shutdown_deadline": 0.0},
        )
        async with server as realtime:
            # The port actually listened on (clarion_port 0: a free one).
            _use_clarion(app, settings, realtime.host, realtime.port)
            log.info("Clarion (embedded) at %s, app %s", realtime.ws_url, settings.app_id)
            yield

    app = FastAPI(title="Clarion example chat", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie="chat_session",
        same_site="lax",
        https_only=False,
    )
    app.state.settings = settings
    _use_clarion(app, settings, settings.clarion_host, settings.clarion_port)
    # The members the webhook endpoint logged, newest last (the last WEBHOOK_LOG_SIZE).
    app.state.webhook_log = deque(maxlen=WEBHOOK_LOG_SIZE)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/vendor/pusher.min.js", include_in_schema=False)
    async def pusher_js() -> FileResponse:
        if not settings.pusher_js.is_file():
            raise HTTPException(
                404, f"pusher-js is not installed at {settings.pusher_js}: npm ci in examples/chat"
            )
        return FileResponse(settings.pusher_js, media_type="text/javascript")

    @app.get("/api/config")
    async def config(request: Request) -> dict[str, Any]:
        """What the page passes to ``new Pusher(key, options)``."""
        host, port = request.app.state.clarion_at
        return {
            "key": settings.key,
            "room": ROOM,
            "privatePrefix": PRIVATE_PREFIX,
            "options": {
                "wsHost": host,
                "wsPort": port,
                "forceTLS": False,
                "enabledTransports": ["ws"],
                "cluster": "",
                "channelAuthorization": {"endpoint": "/pusher/auth", "transport": "ajax"},
            },
        }

    @app.get("/api/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"user": _user(request)}

    @app.post("/api/session")
    async def sign_in(request: Request) -> dict[str, Any]:
        name = _clean_text((await _json_object(request)).get("name"), MAX_NAME, "name")
        # A fresh id per sign-in: two people may pick the same name.
        user = {"id": secrets.token_hex(8), "name": name}
        request.session["user"] = user
        log.info("signed in: %s (%s)", name, user["id"])
        return {"user": user}

    @app.delete("/api/session")
    async def sign_out(request: Request) -> dict[str, Any]:
        user = _user(request)
        request.session.clear()
        if user is None:
            return {"user": None, "other_tabs_told": False}
        log.info("signed out: %s (%s)", user["name"], user["id"])
        # The user's other tabs listen on their private channel and leave the room too.
        # Signing out happened either way; the answer says whether they were told.
        try:
            await _trigger(request, f"{PRIVATE_PREFIX}{user['id']}", "signed-out", {})
        except HTTPException:
            return {"user": None, "other_tabs_told": False}
        return {"user": None, "other_tabs_told": True}

    @app.post("/api/messages")
    async def post_message(request: Request) -> dict[str, Any]:
        user = _signed_in(request)
        body = await _json_object(request)
        text = _clean_text(body.get("text"), MAX_TEXT, "text")
        message = {
            "id": secrets.token_hex(8),
            "user": user,
            "text": text,
            "sent_at": int(time.time() * 1000),
        }
        await _trigger(request, ROOM, "message", message)
        return {"message": message}

    @app.post("/pusher/auth")
    async def authorize(request: Request) -> JSONResponse:
        """pusher-js's channel authorization request (form-encoded socket_id and
        channel_name); the signature is the SDK's."""
        user = _signed_in(request)
        try:
            form = parse_qs((await _body(request, MAX_FORM_BYTES)).decode(), strict_parsing=True)
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "not a form") from None
        socket_id = form.get("socket_id", [""])[0]
        channel = form.get("channel_name", [""])[0]
        client: pusher.Pusher = request.app.state.pusher
        try:
            if channel == ROOM:
                signed = client.authenticate(
                    channel, socket_id, {"user_id": user["id"], "user_info": {"name": user["name"]}}
                )
            elif channel == f"{PRIVATE_PREFIX}{user['id']}":
                signed = client.authenticate(channel, socket_id)
            else:
                raise HTTPException(403, f"{user['name']} may not subscribe to {channel!r}")
        except ValueError as error:
            # The SDK's check of the socket id or channel name.
            raise HTTPException(400, str(error)) from None
        return JSONResponse(signed)

    @app.post("/pusher/webhooks")
    async def webhooks(request: Request) -> dict[str, Any]:
        body = await _body(request, MAX_WEBHOOK_BYTES)
        client: pusher.Pusher = request.app.state.pusher
        try:
            checked = client.validate_webhook(
                request.headers.get("x-pusher-key", ""),
                request.headers.get("x-pusher-signature", ""),
                body.decode(),
            )
        except (ValueError, TypeError, UnicodeDecodeError):
            checked = None
        if not isinstance(checked, dict) or not isinstance(checked.get("events"), list):
            log.warning("webhook refused: bad key, signature, time or body")
            raise HTTPException(401, "webhook signature does not verify")
        for event in checked["events"]:
            if not isinstance(event, dict):
                continue
            if event.get("name") in ("member_added", "member_removed"):
                entry = {k: event.get(k) for k in ("name", "channel", "user_id")}
                request.app.state.webhook_log.append(entry)
                log.info(
                    "webhook %s: user %s on %s", entry["name"], entry["user_id"], entry["channel"]
                )
        return {"ok": True}

    return app


async def _trigger(request: Request, channel: str, event: str, data: dict[str, Any]) -> None:
    """Publish through Clarion's HTTP API; 502 (never a success) when it did not take it."""
    client: pusher.Pusher = request.app.state.pusher
    try:
        # The SDK is synchronous: off the event loop that Clarion may share.
        await run_in_threadpool(client.trigger, channel, event, data)
    except Exception as error:
        log.warning("trigger %s on %s failed: %s", event, channel, error)
        raise HTTPException(502, "the realtime server did not take the message") from None
