"""One connection's Pusher session (protocol 7), sans-I/O: parsed messages in, decisions out.

The session holds what protocol 7 remembers about one WebSocket connection and decides,
for each parsed client message (:class:`~clarion.protocol.messages.ClientMessage`), what
happens: a frame to send back, a channel to join or leave, a user to sign in, a client
event to forward, or a close. It never waits and never touches a socket or the hub: the
connection (``clarion.server.connection``) carries a decision out and, where the hub had
to answer first, feeds the answer back (:meth:`Session.subscribed`,
:meth:`Session.signed_in`, :meth:`Session.presence_full`), which returns the frames to send.

State
-----
A session starts *unopened* (``app`` is None) and is *open* from :meth:`Session.start`
(the handshake admitted it: app and socket id known) until the connection ends
(:meth:`Session.ended`). Closing is the connection's business: it stops feeding messages
once it closes. While open, the session keeps:

- ``channels``: the channels the hub confirmed (a subscribe enters it only when the hub
  says the join was new; an unsubscribe removes it at once, before the hub is told): a
  tuple while there are few (nearly every connection: an empty one is shared, one
  channel takes 48 bytes where a set takes 216), a set past ``FEW_CHANNELS``;
- ``user``: the signed-in user, if any (a new sign-in forgets the previous user at once:
  the connection signs it out before signing the new one in);
- ``authorized``: signed in, or subscribed to a channel that needed authorisation;
- ``client_events_window``/``client_events_count``: the one-second client-event window;
- ``last_seen``/``ping_sent_at``: when the client last sent anything and when a ping went
  out unanswered (the connection writes both as bytes arrive: any data answers a ping).

Rules, per message (:meth:`Session.receive`)
--------------------------------------------
- ``pusher:ping`` → ``pusher:pong``, at once, even behind messages still waiting on the
  cluster state. ``pusher:pong`` and unknown ``pusher:*`` events → nothing.
- ``pusher:subscribe`` → in this order: a missing channel is a ``pusher:error``; a bad
  name (or one longer than the app's ``max_channel_name_length``, capped at 164) is
  ``InvalidChannel`` (400); past the app's channels-per-connection limit, ``LimitReached``
  (4100); then by kind: public and cache channels need nothing;
  private and encrypted channels need ``auth`` over ``socket_id:channel`` (``AuthError``
  401); presence channels need ``channel_data`` and ``auth`` over
  ``socket_id:channel:channel_data``, or a signed-in user and ``auth`` over
  ``socket_id:channel`` (``AuthError`` 401; unusable ``channel_data`` 400), and a member
  whose ``user_id`` is at most 128 characters and ``user_info`` at most 1 KiB
  (``LimitReached`` 413); ``#server-to-user-{id}`` needs to be signed in as ``id``
  (``AuthError`` 401). Then :class:`Join`. The hub's answer goes to
  :meth:`Session.subscribed` (or :meth:`Session.presence_full`, ``LimitReached`` 4100).
- ``pusher:unsubscribe`` of a subscribed channel → :class:`Leave`; otherwise nothing.
- ``pusher:signin`` → missing ``user_data``, a bad ``auth`` over
  ``socket_id::user::user_data`` or unusable user data close the connection with 4009
  (:class:`Close`); otherwise :class:`SignIn`, and the hub's answer goes to
  :meth:`Session.signed_in` (``pusher:signin_success``, then the watchlist frame).
- ``client-*`` → in order, each refusal a ``pusher:error`` and never a close: client
  events enabled for the app; a channel given; a private or presence channel; subscribed
  to it; the event name at most the app's ``max_event_name_length`` (200) characters; at
  most ``client_event_rate_limit`` in the current one-second window (else code 4301).
  Then :class:`ClientEvent`; its frame comes from :meth:`Session.client_event_frame`,
  which refuses data over the app's ``max_event_payload_kb`` (10 KiB).
- Anything else, or a ``data`` that is not an object: ``pusher:error`` with code null.

Activity (:meth:`Session.activity`, about once a second): not authorised within the
app's ``user_authentication_timeout`` → close 4009; a ping unanswered for the pong timeout
→ close 4201; quiet for ``activity_timeout`` → ``pusher:ping``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from clarion.protocol import messages, names, signing
from clarion.protocol.errors import BadMessage, CloseCode
from clarion.protocol.messages import ClientMessage, SignedInUser
from clarion.protocol.names import ChannelKind

_PUBLIC = ChannelKind.PUBLIC
_PRIVATE = ChannelKind.PRIVATE
_ENCRYPTED = ChannelKind.ENCRYPTED
_PRESENCE = ChannelKind.PRESENCE
_SERVER_TO_USER = ChannelKind.SERVER_TO_USER


class SessionSettings(Protocol):
    """The app settings a session reads (``clarion.config.AppConfig`` has them)."""

    @property
    def activity_timeout(self) -> int: ...
    @property
    def max_channels_per_connection(self) -> int: ...
    @property
    def client_events(self) -> bool: ...
    @property
    def client_event_rate_limit(self) -> int: ...
    @property
    def watchlist_events(self) -> bool: ...
    @property
    def user_authentication_timeout(self) -> float | None: ...


class SessionApp(Protocol):
    """What a session needs of its app (``clarion.apps.App`` is one)."""

    @property
    def config(self) -> SessionSettings: ...
    @property
    def credentials(self) -> signing.Credentials: ...
    @property
    def limits(self) -> names.EventLimits: ...


class JoinResult(Protocol):
    """The hub's answer to a join: the frames to send, in order, and whether it was new."""

    @property
    def frames(self) -> list[bytes]: ...
    @property
    def new(self) -> bool: ...


# --- decisions ----------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """Send ``frame`` to this connection; nothing else changes."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Join:
    """Join ``channel`` in the hub (as presence member ``user_id`` if it is not None), then
    hand the answer to :meth:`Session.subscribed`."""

    channel: str
    kind: ChannelKind
    user_id: str | None = None
    user_info: Any = None


@dataclass(slots=True)
class Leave:
    """Leave ``channel`` in the hub (the session has forgotten it already)."""

    channel: str


@dataclass(slots=True)
class SignIn:
    """Sign ``previous`` out if it is not None, then ``user`` in (watching ``watchlist``),
    then hand the hub's watchlist frame to :meth:`Session.signed_in`."""

    user: SignedInUser
    user_data: str
    watchlist: list[str]
    previous: SignedInUser | None


@dataclass(slots=True)
class ClientEvent:
    """Forward client event ``event`` on ``channel`` to the channel's other subscribers.

    On a presence channel (``presence``) the frame names the sender's user id, which the
    hub knows: the frame comes from :meth:`Session.client_event_frame`.
    """

    channel: str
    event: str
    data: Any
    presence: bool


@dataclass(slots=True)
class Close:
    """Send ``pusher:error`` with ``code``, then close the connection with the same code."""

    code: CloseCode
    message: str


Decision = Reply | Join | Leave | SignIn | ClientEvent | Close

# Decisions that carry nothing of the message: built once.
PONG = Reply(messages.PONG)
PING = Reply(messages.PING)
RATE_LIMITED = Reply(
    messages.error(
        int(CloseCode.CLIENT_EVENT_RATE_LIMIT), "Client event rejected due to rate limit"
    )
)
AUTH_TIMEOUT = Close(CloseCode.UNAUTHORIZED, "Connection not authorized within timeout.")
PONG_TIMEOUT = Close(CloseCode.PONG_TIMEOUT, "Pong reply not received")


# Joins without a member, by channel: the same few channels are subscribed to over and
# over, so a subscribe allocates no decision, and every connection remembers the same
# string for a channel rather than its own copy.
_JOINS: dict[str, Join] = {}


def _join(channel: str, kind: ChannelKind) -> Join:
    join = _JOINS.get(channel)
    if join is None:
        if len(_JOINS) > 10_000:
            _JOINS.clear()
        join = _JOINS[channel] = Join(channel, kind)
    return join


def _refused(channel: str, type_: str, message: str, status: int) -> Reply:
    return Reply(messages.subscription_error(channel, type_, message, status))


A = TypeVar("A", bound=SessionApp)

# A session's channels are a tuple up to this many, then a set (see the module docstring).
FEW_CHANNELS = 8
Channels = tuple[str, ...] | set[str]


def _with(channels: Channels, channel: str) -> Channels:
    if isinstance(channels, tuple):
        if channel in channels:
            return channels
        if len(channels) < FEW_CHANNELS:
            return (*channels, channel)
        channels = set(channels)
    channels.add(channel)
    return channels


def _without(channels: Channels, channel: str) -> Channels:
    if isinstance(channels, tuple):
        return tuple([kept for kept in channels if kept != channel])
    channels.discard(channel)
    return channels



class Session(Generic[A]):
    """One connection's protocol state and rules (see the module docstring).

    The server's connection class inherits from it, so that a connection stays one
    slotted object: the session's state is part of the connection's own slots.
    """

    __slots__ = (
        "app",
        "authorized",
        "channels",
        "client_events_count",
        "client_events_window",
        "connected_at",
        "last_seen",
        "ping_sent_at",
        "socket_id",
        "user",
    )

    # The clock of the client-event rate window (a test may set another on a subclass).
    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.app: A | None = None
        self.socket_id = ""
        self.channels: Channels = ()
        self.user: SignedInUser | None = None
        self.authorized = False
        self.client_events_window = 0.0
        self.client_events_count = 0
        self.last_seen = 0.0
        self.ping_sent_at = 0.0
        self.connected_at = 0.0

    def start(self, app: A, socket_id: str, now: float) -> bytes:
        """Open the session for ``app``; return ``pusher:connection_established``."""
        self.app = app
        self.socket_id = socket_id
        self.last_seen = self.connected_at = now
        return messages.connection_established(socket_id, app.config.activity_timeout)

    def ended(self) -> tuple[Channels, SignedInUser | None]:
        """The connection is going: forget and return its channels and signed-in user,
        which the connection then leaves and signs out."""
        channels, self.channels = self.channels, ()
        user, self.user = self.user, None
        return channels, user

    # --- messages --------------------------------------------------------------------

    def receive(self, message: ClientMessage) -> Decision | None:
        """Decide what ``message`` (from an open session) calls for; None: nothing."""
        name = message.event
        if name == "pusher:ping":
            return PONG
        if name == "pusher:pong":
            return None
        try:
            if name == "pusher:subscribe":
                return self._subscribe(messages.protocol_data(message))
            if name == "pusher:unsubscribe":
                channel = messages.protocol_data(message).get("channel")
                if isinstance(channel, str) and channel in self.channels:
                    self.channels = _without(self.channels, channel)
                    return Leave(channel)
                return None
            if name == "pusher:signin":
                return self._signin(messages.protocol_data(message))
            if name.startswith("pusher:"):
                return None  # unknown protocol events are ignored
            if name.startswith("client-"):
                return self._client_event(message)
            raise BadMessage(f"Unsupported event {name!r} from a client")
        except BadMessage as exc:
            return Reply(messages.error(None, str(exc)))

    # --- subscribe ---------------------------------------------------------------------

    def _subscribe(self, data: dict[str, Any]) -> Reply | Join:
        app = self.app
        assert app is not None
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise BadMessage("Missing parameter: data.channel")
        # The happy path, straight: a public channel subscribed to before passed the name
        # rules then (only the length depends on the app), and needs no more checks.
        join = _JOINS.get(channel)
        known = (
            join is not None
            and join.kind is _PUBLIC
            and len(channel) <= names.MAX_CHANNEL_NAME_SUBSCRIBE
            and len(channel) <= app.limits.max_channel_name_length
        )
        if not known:
            problem = names.channel_name_error(channel, app.limits.max_subscribe_channel_name)
            if problem:
                return _refused(channel, "InvalidChannel", problem, 400)
        limit = app.config.max_channels_per_connection
        channels = self.channels
        if len(channels) >= limit and channel not in channels:
            return _refused(
                channel, "LimitReached", f"A connection may subscribe to {limit} channels", 4100
            )
        if known and join is not None:
            return join
        kind = names.channel_kind(channel)
        if kind is _PRIVATE or kind is _ENCRYPTED:
            problem = self._auth_problem(channel, data.get("auth"))
            if problem:
                return _refused(channel, "AuthError", problem, 401)
        elif kind is _PRESENCE:
            return self._presence_join(channel, data)
        elif kind is _SERVER_TO_USER:
            user_id = channel[len(names.SERVER_TO_USER_PREFIX) :]
            if self.user is None or self.user.id != user_id:
                return _refused(
                    channel, "AuthError", "Sign in as this user before subscribing", 401
                )
        return _join(channel, kind)

    def _presence_join(self, channel: str, data: dict[str, Any]) -> Reply | Join:
        app = self.app
        assert app is not None
        channel_data = data.get("channel_data")
        if channel_data is None and self.user is not None:
            # A signed-in pusher-js (>= 7.4) may omit channel_data: the member is the
            # signed-in user, and the signature covers socket_id:channel only.
            problem = self._auth_problem(channel, data.get("auth"))
            if problem:
                return _refused(channel, "AuthError", problem, 401)
            return self._member_join(channel, self.user.id, self.user.user_info)
        if not isinstance(channel_data, str):
            return _refused(
                channel,
                "AuthError",
                "Missing channel_data for a presence channel (or sign in first)",
                401,
            )
        problem = signing.check_auth_token(
            data.get("auth"),
            app.credentials,
            signing.channel_auth_string(self.socket_id, channel, channel_data),
        )
        if problem:
            return _refused(channel, "AuthError", problem, 401)
        try:
            user_id, user_info = messages.parse_channel_data(channel_data)
        except BadMessage as exc:
            return _refused(channel, "AuthError", str(exc), 400)
        return self._member_join(channel, user_id, user_info)

    def _auth_problem(self, channel: str, auth: object) -> str | None:
        """Why ``auth`` does not sign ``socket_id:channel``, or None when it does."""
        assert self.app is not None
        return signing.check_auth_token(
            auth, self.app.credentials, signing.channel_auth_string(self.socket_id, channel)
        )

    def _member_join(self, channel: str, user_id: str, user_info: Any) -> Reply | Join:
        """The presence member limits, whether the member came from channel_data or from
        the sign-in."""
        if len(user_id) > names.MAX_PRESENCE_USER_ID:
            return _refused(
                channel,
                "LimitReached",
                f"user_id is longer than {names.MAX_PRESENCE_USER_ID} characters",
                413,
            )
        if len(messages.encode_json(user_info)) > names.MAX_PRESENCE_USER_INFO_BYTES:
            return _refused(
                channel,
                "LimitReached",
                f"user_info is larger than {names.MAX_PRESENCE_USER_INFO_BYTES} bytes",
                413,
            )
        return Join(channel, _PRESENCE, user_id, user_info)

    def subscribed(self, join: Join, result: JoinResult) -> list[bytes]:
        """The hub joined (or already had) the channel: remember it; the frames to send."""
        if result.new:
            self.channels = _with(self.channels, join.channel)
        if join.kind is not _PUBLIC:
            self.authorized = True
        return result.frames

    def presence_full(self, channel: str, limit: int) -> bytes:
        """The hub refused a presence join: the channel holds ``limit`` members already."""
        return messages.subscription_error(
            channel, "LimitReached", f"Presence channel is full ({limit} members)", 4100
        )

    # --- sign-in ---------------------------------------------------------------------

    def _signin(self, data: dict[str, Any]) -> Close | SignIn:
        app = self.app
        assert app is not None
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            return Close(CloseCode.UNAUTHORIZED, "Invalid signin: missing user_data")
        problem = signing.check_auth_token(
            data.get("auth"), app.credentials, signing.user_auth_string(self.socket_id, user_data)
        )
        if problem:
            return Close(CloseCode.UNAUTHORIZED, problem)
        try:
            user = messages.parse_user_data(user_data)
        except BadMessage as exc:
            return Close(CloseCode.UNAUTHORIZED, f"Invalid signin: {exc}")
        previous, self.user = self.user, None
        watchlist = user.watchlist if app.config.watchlist_events else []
        return SignIn(user, user_data, watchlist, previous)

    def signed_in(self, signin: SignIn, watchlist_frame: bytes | None) -> list[bytes]:
        """The hub signed the user in: remember it; the frames to send, in order."""
        self.user = signin.user
        self.authorized = True
        frames = [messages.signin_success(signin.user_data)]
        if watchlist_frame is not None:
            frames.append(watchlist_frame)
        return frames

    # --- client events -----------------------------------------------------------------

    def _client_event(self, message: ClientMessage) -> Reply | ClientEvent:
        app = self.app
        assert app is not None
        config = app.config
        channel = message.channel
        if not config.client_events:
            raise BadMessage(
                "To send client events, you must enable this feature in the Settings page "
                "of your dashboard."
            )
        if channel is None:
            raise BadMessage("Client events need a channel")
        kind = names.channel_kind(channel)
        if kind is not _PRIVATE and kind is not _PRESENCE:
            raise BadMessage(
                f"Client events are only allowed on private and presence channels, not {channel}"
            )
        if channel not in self.channels:
            raise BadMessage(f"Subscribe to {channel} before sending client events on it")
        max_name = app.limits.max_event_name_length
        if len(message.event) > max_name:
            raise BadMessage(f"Client event name is longer than {max_name} characters")
        now = self.clock()
        if now - self.client_events_window >= 1.0:
            self.client_events_window = now
            self.client_events_count = 0
        self.client_events_count += 1
        if self.client_events_count > config.client_event_rate_limit:
            return RATE_LIMITED
        return ClientEvent(channel, message.event, message.data, kind is _PRESENCE)

    def client_event_frame(self, event: ClientEvent, user_id: str | None) -> bytes | Reply:
        """The frame the channel's other subscribers get (``user_id``: the sender's, on a
        presence channel), or the ``pusher:error`` refusing data that is too large."""
        app = self.app
        assert app is not None
        limit = app.limits.max_event_payload_bytes
        frame = messages.client_event(event.event, event.channel, event.data, user_id)
        # The frame is bigger than its data, so only a big frame needs the exact size.
        if len(frame) > limit and len(messages.encode_json(event.data)) > limit:
            return Reply(messages.error(None, f"Client event data is larger than {limit} bytes"))
        return frame

    # --- activity ----------------------------------------------------------------------

    def activity(self, now: float, pong_timeout: float) -> Reply | Close | None:
        """About once a second: ping a quiet client, close one that never answers or never
        authorises in time; None: nothing to do."""
        app = self.app
        assert app is not None
        deadline = app.config.user_authentication_timeout
        if deadline is not None and not self.authorized and now - self.connected_at > deadline:
            return AUTH_TIMEOUT
        if self.ping_sent_at:
            if now - self.ping_sent_at > pong_timeout:
                return PONG_TIMEOUT
            return None
        if now - self.last_seen >= app.config.activity_timeout:
            self.ping_sent_at = now
            return PING
        return None
