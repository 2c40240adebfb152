"""The Redis key schema of a Clarion cluster: every key and per-node hash field, here only.

Every node of a cluster reads and writes these keys, so their names and value formats
are the cluster's wire format: all nodes sharing a prefix must run the same version
(docs/cluster.md). P is the configured prefix, A an app id, C a channel name, U a user
id, N a node id, Q a webhook queue; ``enc(...)`` is :func:`encode`.

No part of a key or field that a client chooses is ever told from the next by a
separator: user ids may hold any character (U+001F, NUL, ':' ...). Where a key or field
holds several such parts they are length-prefixed (:func:`encode`); elsewhere the
client-chosen part is the last one, after parts that cannot contain ':' (the prefix and
app ids are checked for it): a channel name, or a user id in the hub's internal pub/sub
channels ``#watch:U`` and ``#terminate:U`` (no Pusher channel name starts with '#' but
``#server-to-user-``).

=========================  ====================================================  ========
Key                        Holds                                                  Type
=========================  ====================================================  ========
``P:subs:A``               channel -> sockets subscribed, cluster-wide            hash
``P:members:A:C``          presence user -> that user's sockets in C              hash
``P:info:A:C``             presence user -> user_info (JSON) given at join         hash
``P:usercount:A``          presence channel -> distinct users                     hash
``P:ver:A``                grows with every change to A's channel/user counts     string
                           (never behind the Redis clock in microseconds); the
                           version of each change, ordering member events
``P:users:A``              signed-in user -> signed-in sockets                    hash
``P:cache:A:C``            the cache channel's last event, ``[event, data]`` JSON string
``P:countturn:A:C``        "1" while a node holds the turn to send C's count      string
``P:node:N``               node N's share of the counts above (fields below)      hash
``P:nodes``                node -> lease expiry (ms, Redis clock)                 zset
``P:conns:N``              app -> node N's open connections (expires)             hash
``P:ch:A:C``               pub/sub channel: frames of C (see :mod:`.pubsub`)      channel
``P:here:N``               pub/sub channel node N subscribes last, once it        channel
                           listens to all it needs: its NUMSUB on a Redis says N
                           hears publishes there (a lease may be a stale copy)
``P:rate:K:T``             requests in rate-limit bucket K during second T        string
``P:left:enc(A,C,U)``      "1" for webhook_delay after user U's last socket left  string
                           presence channel C: a join meanwhile is a return
``P:held:enc(A,E,C,U)``    a webhook E held back: the holding node's token, or    string
                           "taken" (C or U empty when E has none)
``P:wh:jobs:Q``            webhook job id -> payload                              hash
``P:wh:due:Q``             webhook job id -> due time (ms, Redis clock)           zset
``P:about:N``              node N's ``name`` and ``since`` (Unix s), for the      hash
                           admin console (expires with the lease)
``P:taps``                 pub/sub channel: which nodes have an admin console     channel
                           open on which app (see :mod:`.pubsub`)
``P:tap:A``                pub/sub channel: A's admin console rows, subscribed    channel
                           only by nodes with a console open on A
=========================  ====================================================  ========

Fields of ``P:node:N`` (built by the Lua scripts with ``_codec.lua``, the Lua twin of
:func:`encode`, and read back by ``_subtract_node.lua``), each counting node N's sockets:

=========================  ====================================================
Field                      Counts
=========================  ====================================================
``enc(s, A, C)``           sockets of N subscribed to channel C
``enc(m, A, C, U)``        sockets of N that are user U in presence channel C
``enc(u, A, U)``           sockets of N signed in as user U
=========================  ====================================================

The reaping scripts build the keys of whatever apps a node's share names from the
templates of :meth:`RedisKeys.script_templates` (``%s`` for the app id and channel),
so that they too take their keys from here.

On Redis Cluster (``sharded=True``, the ``redis-cluster`` adapter) every script must touch
one hash slot, so the same keys carry hash tags (docs/cluster.md, "Slots"):

* every key of app A is tagged ``{A}`` (``P:subs:{A}``, ``P:members:{A}:C``,
  ``P:held:{A}:enc(A,E,C,U)`` ...): an app's state lives on one shard;
* node N's share is split per app, ``P:node:{A}:N``, in its app's slot, so that join,
  leave and sign stay one single-slot script; ``P:{P}:apps:N`` (the set of apps N has a
  share in) lets a reaper find them;
* the leases, connection counts and the cluster's own bookkeeping are tagged with the
  prefix: ``P:{P}:nodes``, ``P:{P}:conns:N``, ``P:{P}:reaping`` (dead nodes being reaped:
  node -> claim expiry), ``P:{P}:round`` and ``P:{P}:heard`` (see :mod:`.sharded`);
* a webhook queue Q is tagged ``{Q}``; rate windows and cache keys are single keys;
* pub/sub channels ``P:ch:A:C`` are **not** tagged: each Pusher channel hashes to its own
  slot, so the fan-out of one app spreads over every shard (sharded pub/sub).

Standalone keys carry no tags (as before).
"""

from __future__ import annotations

from clarion.cluster.interfaces import HeldKey


def encode(*parts: str) -> str:
    """``parts`` as one string, each written ``<its length in UTF-8 bytes>:<itself>``:
    no two different lists of parts give the same string, whatever they contain
    (``_codec.lua`` does the same in the scripts)."""
    return "".join(f"{len(part.encode())}:{part}" for part in parts)


def decode(encoded: str | bytes) -> list[str]:
    """The parts of an :func:`encode`'d string (or of its UTF-8 bytes, as Redis returns
    them). Raises ValueError for anything :func:`encode` cannot have written."""
    data = encoded.encode() if isinstance(encoded, str) else encoded
    parts = []
    at = 0
    while at < len(data):
        colon = data.find(b":", at)
        digits = data[at:colon]
        if colon < 0 or not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
            raise ValueError(f"not a length prefix at byte {at}")
        end = colon + 1 + int(digits)
        if end > len(data):
            raise ValueError(f"a part runs past the end at byte {at}")
        parts.append(data[colon + 1 : end].decode())
        at = end
    return parts


def _template(prefix: str, kind: str, parts: int, tagged: bool = False) -> str:
    """``P:kind:%s[:%s]``: a key with ``parts`` slots for ``%`` formatting (in Python)
    and ``string.format`` (in Lua); a ``%`` in the prefix is escaped for both. ``tagged``:
    the first slot (the app id) is a hash tag, ``P:kind:{%s}:%s``."""
    slots = ["%s"] * parts
    if tagged:
        slots[0] = "{%s}"
    return ":".join((prefix.replace("%", "%%"), kind, *slots))


class RedisKeys:
    """The keys of one cluster (one prefix), as seen by node ``node_id``."""

    __slots__ = (
        "_cache",
        "_countturn",
        "_global",
        "_info",
        "_members",
        "_share",
        "_subs",
        "_tag",
        "_usercount",
        "_users",
        "_ver",
        "channel_prefix",
        "node_id",
        "nodes",
        "own_conns",
        "own_node",
        "prefix",
        "sharded",
        "tap_prefix",
        "taps",
    )

    def __init__(self, prefix: str, node_id: str, sharded: bool = False) -> None:
        if sharded and ("{" in prefix or "}" in prefix):
            raise ValueError("a Redis Cluster prefix may not contain '{' or '}'")
        self.prefix = prefix
        self.node_id = node_id
        self.sharded = sharded
        t = sharded
        self._subs = _template(prefix, "subs", 1, t)
        self._members = _template(prefix, "members", 2, t)
        self._info = _template(prefix, "info", 2, t)
        self._usercount = _template(prefix, "usercount", 1, t)
        self._ver = _template(prefix, "ver", 1, t)
        self._users = _template(prefix, "users", 1, t)
        self._cache = _template(prefix, "cache", 2, t)
        self._countturn = _template(prefix, "countturn", 2, t)
        # Per-app share of a node (Redis Cluster only): P:node:{A}:N.
        self._share = _template(prefix, "node", 2, True)
        # The prefix's own slot on Redis Cluster: P:{P}:..., standalone P:...
        self._global = f"{prefix}:{{{prefix}}}" if sharded else prefix
        self._tag = "{%s}" if sharded else "%s"
        self.nodes = f"{self._global}:nodes"
        self.own_node = self.node(node_id)
        self.own_conns = self.conns(node_id)
        # Pub/sub channels are this prefix followed by "A:C".
        self.channel_prefix = f"{prefix}:ch:"
        # The admin console's: announcements of who watches, and each app's rows.
        self.taps = f"{prefix}:taps"
        self.tap_prefix = f"{prefix}:tap:"

    # --- cluster state ------------------------------------------------------------------

    def subs(self, app_id: str) -> str:
        return self._subs % app_id

    def members(self, app_id: str, channel: str) -> str:
        return self._members % (app_id, channel)

    def info(self, app_id: str, channel: str) -> str:
        return self._info % (app_id, channel)

    def usercount(self, app_id: str) -> str:
        return self._usercount % app_id

    def ver(self, app_id: str) -> str:
        return self._ver % app_id

    def users(self, app_id: str) -> str:
        return self._users % app_id

    def cache(self, app_id: str, channel: str) -> str:
        return self._cache % (app_id, channel)

    def countturn(self, app_id: str, channel: str) -> str:
        return self._countturn % (app_id, channel)

    def share(self, app_id: str, node_id: str | None = None) -> str:
        """The hash holding node N's (default: this node's) share of app A's counts:
        ``P:node:N`` for every app on a standalone Redis, ``P:node:{A}:N`` on a cluster."""
        node_id = self.node_id if node_id is None else node_id
        if not self.sharded:
            return self.own_node if node_id == self.node_id else self.node(node_id)
        return self._share % (app_id, node_id)

    def channel_keys(self, app_id: str, channel: str) -> list[str]:
        """KEYS of ``join.lua`` and ``leave.lua``, in their order."""
        return [
            self._subs % app_id,
            self.share(app_id),
            self._members % (app_id, channel),
            self._info % (app_id, channel),
            self._usercount % app_id,
            self._ver % app_id,
        ]

    def script_templates(self) -> list[str]:
        """The key templates ``_keys.lua`` reads from the end of ARGV, in its order."""
        return [self._ver, self._subs, self._members, self._info, self._usercount, self._users]

    # --- nodes ------------------------------------------------------------------------

    def node(self, node_id: str) -> str:
        """Node N's whole share (standalone Redis only; see :meth:`share`)."""
        return f"{self.prefix}:node:{node_id}"

    def conns(self, node_id: str) -> str:
        return f"{self._global}:conns:{node_id}"

    # --- Redis Cluster only: the bookkeeping of per-app shares (see .sharded) ------------

    def apps(self, node_id: str) -> str:
        """The set of apps node N has a share in."""
        return f"{self._global}:apps:{node_id}"

    @property
    def reaping(self) -> str:
        """Dead nodes being reaped: node -> when the reaper's claim runs out (ms)."""
        return f"{self._global}:reaping"

    @property
    def round(self) -> str:
        """Grows each time a node comes back from an outage of its link."""
        return f"{self._global}:round"

    @property
    def heard(self) -> str:
        """node -> the last round at whose start its subscriptions all answered."""
        return f"{self._global}:heard"

    def here(self, node_id: str) -> str:
        return f"{self.prefix}:here:{node_id}"

    # --- fan-out, rate limits, webhooks -----------------------------------------------

    def redis_channel(self, app_id: str, channel: str) -> str:
        return f"{self.channel_prefix}{app_id}:{channel}"

    def rate(self, bucket: str, window: int) -> str:
        return f"{self.prefix}:rate:{bucket}:{window}"

    def left(self, app_id: str, channel: str, user_id: str) -> str:
        """Marks a presence member who left within the hold-back (join.lua, leave.lua)."""
        return f"{self._tagged('left', app_id)}{encode(app_id, channel, user_id)}"

    def held(self, key: HeldKey) -> str:
        return f"{self._tagged('held', key.app_id)}{encode(*key)}"

    def _tagged(self, kind: str, app_id: str) -> str:
        """``P:kind:`` standalone, ``P:kind:{A}:`` on a cluster (then followed by the
        encoded parts, which repeat A)."""
        if not self.sharded:
            return f"{self.prefix}:{kind}:"
        return f"{self.prefix}:{kind}:{{{app_id}}}:"

    def held_condition(self, key: HeldKey) -> tuple[str, str]:
        """The cluster hash and field whose absence means the held event still holds."""
        if key.name == "channel_vacated":
            return self._subs % key.app_id, key.channel
        if key.name == "member_removed":
            return self._members % (key.app_id, key.channel), key.user_id
        return self._users % key.app_id, key.user_id

    def job_keys(self, queue: str) -> list[str]:
        """KEYS of the job scripts: the due times, then the payloads."""
        tag = self._tag % queue
        return [f"{self.prefix}:wh:due:{tag}", f"{self.prefix}:wh:jobs:{tag}"]

    # --- the admin console ------------------------------------------------------------

    def about(self, node_id: str) -> str:
        # In the prefix's slot: written in one transaction with the node's connection count.
        return f"{self._global}:about:{node_id}"

    def tap_rows(self, app_id: str) -> str:
        return f"{self.tap_prefix}{app_id}"
