"""Event taps: what the data plane reports to the admin console's live log.

Free when nobody watches. The data plane holds one :class:`Taps` (the hub's ``taps``)
and calls :meth:`Taps.emit` only after checking ``app_id in taps.apps`` (a dict that is
empty while no console is open), so nothing is formatted unless a console watches that
app. Each watcher has a queue bounded in bytes: a console that cannot keep up loses
rows (counted and shown), the data plane never waits for it.

In a cluster a console sees every node's rows: while the broker says another node
watches an app (:meth:`Taps.watched_elsewhere`), the app is a key of ``apps`` here too
(with no local watcher), and each row is formatted once and handed to ``relay`` as
well; rows of the other nodes come back through :meth:`Taps.receive`. Each row names
its node.

Rows never carry signatures, secrets or auth tokens: callers pass what a row shows
(socket id, channel, event, user id, payload) and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec

from clarion.protocol.errors import ConnectRefused
from clarion.protocol.handshake import ORIGIN_NOT_ALLOWED

# The row types, spelled as the console shows them.
CONNECTION = "Connection"
DISCONNECTION = "Disconnection"
SUBSCRIBED = "Subscribed"
UNSUBSCRIBED = "Unsubscribed"
OCCUPIED = "Occupied"
VACATED = "Vacated"
MEMBER_ADDED = "Member added"
MEMBER_REMOVED = "Member removed"
API_MESSAGE = "API Message"
CLIENT_EVENT = "Client Event"
SIGN_IN = "Sign-in"
ERROR = "Error"
WEBHOOK = "Webhook"
TYPES = (
    CONNECTION,
    DISCONNECTION,
    SUBSCRIBED,
    UNSUBSCRIBED,
    OCCUPIED,
    VACATED,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    API_MESSAGE,
    CLIENT_EVENT,
    SIGN_IN,
    ERROR,
    WEBHOOK,
)
# A row's details (a payload, say) are cut to this many characters.
MAX_DETAILS = 2000
# Rows a watcher may hold, in bytes, before new ones are dropped (and counted).
WATCHER_BYTES = 1 << 20
# Distinct errors remembered per app (the oldest group goes first).
MAX_ERROR_GROUPS = 50
# Webhook deliveries remembered per app.
MAX_DELIVERIES = 20
# The Errors part's group of connections refused by an app's allowed_origins, and how
# much of the (client-chosen) origin it shows.
REFUSED_ORIGIN = "Refused origin"
MAX_ORIGIN = 100

_encode = msgspec.json.encode


def cap(details: Any) -> str:
    """``details`` as text (JSON unless it is a string), at most MAX_DETAILS characters."""
    text = details if isinstance(details, str) else _encode(details).decode()
    if len(text) > MAX_DETAILS:
        return text[:MAX_DETAILS] + f"… ({len(text) - MAX_DETAILS} more characters)"
    return text


class Watcher:
    """One open console's rows, bounded in bytes; ``dropped`` counts what did not fit."""

    __slots__ = ("dropped", "limit", "rows", "size", "wake")

    def __init__(self, limit: int = WATCHER_BYTES) -> None:
        self.rows: deque[bytes] = deque()
        self.size = 0
        self.limit = limit
        self.dropped = 0
        self.wake = asyncio.Event()

    def put(self, row: bytes) -> None:
        if self.size + len(row) > self.limit:
            self.dropped += 1
            return
        self.rows.append(row)
        self.size += len(row)
        self.wake.set()

    def take(self) -> tuple[list[bytes], int]:
        """The rows held and how many were dropped since the last take; both reset."""
        rows = list(self.rows)
        self.rows.clear()
        self.size = 0
        dropped, self.dropped = self.dropped, 0
        self.wake.clear()
        return rows, dropped


class Row(msgspec.Struct):
    """One row of the live log, as the console reads it (a struct: encoded faster than
    a dict, and each row is encoded once whoever watches)."""

    time: float
    type: str
    socket_id: str | None
    channel: str | None
    event: str | None
    details: str | None
    node: str


class ErrorGroup(msgspec.Struct):
    kind: str
    message: str
    count: int
    last_seen: float


class Delivery(msgspec.Struct):
    time: float
    url: str
    attempt: int
    status: str
    events: int


class Taps:
    """The watchers per app, and the last errors of every app (kept whether or not a
    console is open: errors are rare, and the Errors part shows them on opening)."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        # Only apps watched here (the list: this node's watchers) or on another node
        # (see _elsewhere) are keys: the data plane's one check.
        self.apps: dict[str, list[Watcher]] = {}
        # Apps a console on another node watches, and where their rows go (the broker).
        self._elsewhere: set[str] = set()
        self.relay: Callable[[str, bytes], None] | None = None
        self.errors: dict[str, OrderedDict[tuple[str, str], ErrorGroup]] = {}
        self.deliveries: dict[str, deque[Delivery]] = {}

    def watch(self, app_id: str, limit: int = WATCHER_BYTES) -> Watcher:
        watcher = Watcher(limit)
        self.apps.setdefault(app_id, []).append(watcher)
        return watcher

    def unwatch(self, app_id: str, watcher: Watcher) -> None:
        watchers = self.apps.get(app_id)
        if watchers is None:
            return
        if watcher in watchers:
            watchers.remove(watcher)
        if not watchers and app_id not in self._elsewhere:
            del self.apps[app_id]

    def watched_elsewhere(self, app_id: str, watched: bool) -> None:
        """Whether a console on another node watches ``app_id`` (told by the broker)."""
        if watched:
            self._elsewhere.add(app_id)
            self.apps.setdefault(app_id, [])
        else:
            self._elsewhere.discard(app_id)
            if not self.apps.get(app_id, True):
                del self.apps[app_id]

    def receive(self, app_id: str, row: bytes) -> None:
        """A row of another node, for this node's watchers of ``app_id``."""
        for watcher in self.apps.get(app_id, ()):
            watcher.put(row)

    def emit(
        self,
        app_id: str,
        kind: str,
        socket_id: str | None = None,
        channel: str | None = None,
        event: str | None = None,
        details: Any = None,
    ) -> None:
        """Send a row to the app's watchers, here and on the other nodes (nothing
        happens when there are none)."""
        watchers = self.apps.get(app_id)
        if watchers is None:
            return
        row = _encode(
            Row(
                time.time(),
                kind,
                socket_id,
                channel,
                event,
                cap(details) if details is not None else None,
                self.node,
            )
        )
        for watcher in watchers:
            watcher.put(row)
        if app_id in self._elsewhere and self.relay is not None:
            self.relay(app_id, row)

    def error(self, app_id: str, kind: str, message: str, socket_id: str | None = None) -> None:
        """Remember an error of ``app_id`` (grouped by kind and message) and log it."""
        groups = self.errors.get(app_id)
        if groups is None:
            groups = self.errors[app_id] = OrderedDict()
        key = (kind, message[:200])
        group = groups.get(key)
        if group is None:
            group = groups[key] = ErrorGroup(kind, key[1], 0, 0.0)
            if len(groups) > MAX_ERROR_GROUPS:
                groups.popitem(last=False)
        else:
            groups.move_to_end(key)
        group.count += 1
        group.last_seen = time.time()
        if app_id in self.apps:
            self.emit(app_id, ERROR, socket_id, None, kind, message)

    def webhook(self, app_id: str, url: str, job: Any, error: str | None) -> None:
        """One delivery attempt of ``job`` to ``url`` (already redacted): kept among the
        app's last deliveries, and a failure among its errors."""
        recent = self.deliveries.get(app_id)
        if recent is None:
            recent = self.deliveries[app_id] = deque(maxlen=MAX_DELIVERIES)
        status = "sent" if error is None else error
        recent.appendleft(Delivery(time.time(), url, job.attempts, status, job.count))
        if error is not None:
            self.error(app_id, "Webhook failure", f"{url}: {error}")
        if app_id in self.apps:
            events = job.events if isinstance(job.events, list) else []
            names = [event.get("name") for event in events[:10]]
            details = {"url": url, "attempt": job.attempts, "status": status, "events": names}
            self.emit(app_id, WEBHOOK, None, None, None, details)

    def error_groups(self, app_id: str) -> list[ErrorGroup]:
        """The app's errors, the most recent first."""
        return list(reversed(self.errors.get(app_id, {}).values()))


# --- one-line call sites of the connection layer -----------------------------------------


def connection_opened(taps: Taps, app_id: str, socket_id: str, peer: str) -> None:
    if app_id in taps.apps:
        taps.emit(app_id, CONNECTION, socket_id, details={"ip": peer})


def connection_closed(taps: Taps, app_id: str, socket_id: str, reason: str) -> None:
    if app_id in taps.apps:
        taps.emit(app_id, DISCONNECTION, socket_id, details={"code": reason})


def _error_kind(code: int) -> str:
    if code in (4004, 4301):
        return "Quota or rate limit"
    if code in (4100,):
        return "Slow consumer or over capacity"
    if code in (4009,):
        return "Auth failure"
    if code in (4003,):
        return "App disabled"
    return "Connection error"


def closed_with_error(taps: Taps, app: Any, socket_id: str | None, code: int, message: str) -> None:
    """A socket is closed with a Pusher error: remember it for the app's Errors part."""
    if app is not None:
        taps.error(app.id, _error_kind(code), f"{code}: {message}", socket_id)


def connection_refused(
    taps: Taps,
    by_key: Callable[[str], Any],
    path: str,
    refused: ConnectRefused,
    origin: str | None = None,
) -> None:
    """A WebSocket was refused at the handshake (over quota, disabled app, too many from
    one address, an Origin the app's ``allowed_origins`` does not allow): an error of the
    app its key names, if it names one. A refused origin is grouped by the origin (cut
    short: the client chose it), which is what an operator fixing allowed_origins needs."""
    app = by_key(path.rsplit("/", 1)[-1])
    if app is not None:
        code = int(refused.code)
        if refused.message == ORIGIN_NOT_ALLOWED:
            shown = (origin or "")[:MAX_ORIGIN]
            taps.error(app.id, REFUSED_ORIGIN, f"{code}: {refused.message}: {shown}")
            return
        kind = "Refused connection" if code == 4100 else _error_kind(code)
        taps.error(app.id, kind, f"{code}: {refused.message}")


def reply_sent(taps: Taps, app: Any, socket_id: str | None, frame: bytes) -> None:
    """A reply went to a client: an error reply (a refused subscribe, a bad client
    event) is remembered for the Errors part. The frame holds no secret: the session's
    error replies say what was wrong, never the signature that was sent."""
    if app is None or b"error" not in frame[:48]:
        return
    start = frame.find(b"{")
    try:
        body = msgspec.json.decode(frame[start:]) if start >= 0 else {}
    except msgspec.DecodeError:
        return
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return
    message = str(data.get("error") or data.get("message") or "")
    status = data.get("status") or data.get("code")
    kind = "Auth failure" if status in (401, 403) else "Refused"
    if status in (4301, 4004, 429):
        kind = "Quota or rate limit"
    channel = body.get("channel")
    text = f"{status}: {message}" + (f" ({channel})" if channel else "")
    taps.error(app.id, kind, text, socket_id)
