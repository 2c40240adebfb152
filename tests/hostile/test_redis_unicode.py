"""Arbitrary Unicode user ids and channel names through join, leave and a node's death
on a real Redis: the dead node's users, and only they, are removed (and announced), and
nothing of them is left behind in Redis. Ids hold the characters a separator could be
made of (U+001F, U+0000, ':', '%'), astral characters, and run up to 128 characters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from clarion.cluster.redis import keys, scripts
from tests.cluster.conftest import redis_server  # noqa: F401 - a fixture
from tests.support.cluster import RedisServer, api, cluster_config, connect
from tests.support.polling import eventually
from tests.support.raw import recv_json, subscribe
from tests.support.recorder import Recorder
from tests.support.server import RunningServer

SECRET = b"app-secret"
ROOMS = ("presence-uni=1", "presence-uni@2;,.")  # valid names with every odd character
TIMEOUT = 10.0


def _random_ids(seed: int, count: int) -> list[str]:
    """Seeded ids of any code point but surrogates, control characters included."""
    rng = random.Random(seed)

    def char() -> str:
        low, high = rng.choice([(0, 0x7F), (0x80, 0xD7FF), (0xE000, 0x10FFFF), (0, 0x1F)])
        return chr(rng.randint(low, high))

    return ["".join(char() for _ in range(rng.randint(1, 128))) for _ in range(count)]


# Pairs a survivor's id is a prefix of the victim's, up to a separator: a parser that
# splits on U+001F (or ':') takes the victim's id for the survivor's.
SURVIVORS = ["bob", "a", ":", "%s", "😀", "\U0001d518" * 127 + "a", "p:1", *_random_ids(1, 4)]
VICTIMS = [
    "bob\x1fx",
    "a\x1fb\x1fc",
    ":\x1f:",
    "%s\x1f%d",
    "😀\x1f😀",
    "\U0001d518" * 126 + "\x1fa",  # 128 characters, the limit
    "p:1:presence-uni=1",
    "\x00",
    "nul\x00\x1f\x00",
    "\x1f",
    *_random_ids(2, 4),
]
BOTH = ["both\x1f", "\U0001d518:%\x00", "\x1f\x1f"]  # a socket on each node


def _has_control(user: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in user)


def _to_user(user: str) -> str | None:
    """The user's server-to-user channel, where the name rules allow one."""
    return None if _has_control(user) else "#server-to-user-" + user


async def _visit(node: RunningServer, user: str) -> ClientConnection:
    """A socket signed in as ``user``, a member of both rooms, and in its own channel."""
    ws, sid = await connect(node)
    await ws.send(json.dumps({"event": "pusher:signin", "data": _signin(sid, user)}))
    assert (await recv_json(ws))["event"] == "pusher:signin_success"
    for room in ROOMS:
        reply = await subscribe(ws, room, **_member(sid, room, user))
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    own = _to_user(user)
    if own is not None:
        reply = await subscribe(ws, own)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return ws


def _auth(text: str) -> str:
    # Signed by hand: the SDK refuses the very ids this test is about.
    return "app-key:" + hmac.new(SECRET, text.encode(), hashlib.sha256).hexdigest()


def _signin(socket_id: str, user: str, watchlist: list[str] | None = None) -> dict[str, str]:
    data: dict[str, Any] = {"id": user}
    if watchlist is not None:
        data["watchlist"] = watchlist
    user_data = json.dumps(data)
    return {"user_data": user_data, "auth": _auth(f"{socket_id}::user::{user_data}")}


def _member(socket_id: str, room: str, user: str) -> dict[str, str]:
    channel_data = json.dumps({"user_id": user})
    return {"channel_data": channel_data, "auth": _auth(f"{socket_id}:{room}:{channel_data}")}


class Observer(Recorder):
    """A socket on the survivor in both rooms, watching every user; frames before index
    ``since`` are not counted."""

    since = 0

    def removed(self, room: str) -> Counter[str]:
        return Counter(
            json.loads(f["data"])["user_id"]
            for f in self.events("pusher_internal:member_removed", self.since)
            if f["channel"] == room
        )

    def offline(self) -> Counter[str]:
        gone: Counter[str] = Counter()
        for f in self.events("pusher_internal:watchlist_events", self.since):
            for event in json.loads(f["data"])["events"]:
                if event["name"] == "offline":
                    gone.update(event["user_ids"])
        return gone

    def marked(self) -> bool:
        return bool(self.events("marker", self.since))


def _hash(client: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


def test_unicode_ids_through_join_leave_and_a_nodes_death(
    redis_server: RedisServer,  # noqa: F811
    make_server: Callable[..., RunningServer],
) -> None:
    config = cluster_config(redis_server, lease=2.0)
    survivor, victim = make_server(config), make_server(config)
    everyone = SURVIVORS + VICTIMS + BOTH
    assert len(set(everyone)) == len(everyone)
    first, second = ROOMS
    # Every other user of each node leaves the second room again before the death.
    on_survivor, on_victim = SURVIVORS + BOTH, VICTIMS + BOTH
    stay_survivor = set(on_survivor) - set(on_survivor[::2])
    stay_victim = set(on_victim) - set(on_victim[::2])
    removed_first = Counter(VICTIMS)  # BOTH keep a socket on the survivor
    removed_second = Counter(stay_victim - stay_survivor)
    offline = Counter(VICTIMS)
    client = redis.Redis(port=redis_server.port)

    def users_of(room: str) -> set[str]:
        return {u["id"] for u in api(survivor).users_info(room)["users"]}

    async def main() -> None:
        ws, sid = await connect(survivor)
        await ws.send(
            json.dumps({"event": "pusher:signin", "data": _signin(sid, "observer", everyone)})
        )
        assert (await recv_json(ws))["event"] == "pusher:signin_success"
        await recv_json(ws)  # the watchlist's first state
        for room in ROOMS:
            auth = _member(sid, room, "observer")
            assert (await subscribe(ws, room, **auth))["event"].endswith("succeeded")
        observer = Observer(ws)
        sockets = [(u, await _visit(survivor, u)) for u in on_survivor]
        doomed = [(u, await _visit(victim, u)) for u in on_victim]
        leave = json.dumps({"event": "pusher:unsubscribe", "data": {"channel": second}})
        for _, sock in sockets[::2] + doomed[::2]:
            await sock.send(leave)
        await eventually(
            lambda: users_of(second) == stay_survivor | stay_victim | {"observer"}, TIMEOUT
        )
        assert users_of(first) == set(everyone) | {"observer"}

        await asyncio.to_thread(api(survivor).trigger, first, "marker", {})
        await observer.wait_for(observer.marked)  # every frame of the leaves came before
        observer.since = len(observer.frames)
        os.kill(victim.process.pid, signal.SIGKILL)  # no goodbye: its lease runs out
        # A timeout here is reported by the exact comparisons below.
        with contextlib.suppress(TimeoutError):
            await observer.wait_for(
                lambda: (
                    set(observer.removed(first)) >= set(removed_first)
                    and set(observer.removed(second)) >= set(removed_second)
                    and set(observer.offline()) >= set(offline)
                )
            )
        # What the reaper announced went out before this marker, published after it.
        await asyncio.to_thread(api(survivor).trigger, first, "marker", {})
        await observer.wait_for(observer.marked)
        assert observer.removed(first) == removed_first
        assert observer.removed(second) == removed_second
        assert observer.offline() == offline

        # Every other user is still there, with the right count, and nothing else is.
        assert users_of(first) == set(on_survivor) | {"observer"}
        assert users_of(second) == stay_survivor | {"observer"}
        one = "1"
        assert _hash(client, "test:users:1") == {u: one for u in [*on_survivor, "observer"]}
        for room, members in ((first, set(on_survivor)), (second, stay_survivor)):
            members = members | {"observer"}
            assert _hash(client, f"test:members:1:{room}") == dict.fromkeys(members, one)
            assert set(_hash(client, f"test:info:1:{room}")) == members
        subs = {first: str(len(on_survivor) + 1), second: str(len(stay_survivor) + 1)}
        subs.update((c, one) for c in map(_to_user, on_survivor) if c is not None)
        assert _hash(client, "test:subs:1") == subs
        usercount = {first: str(len(on_survivor) + 1), second: str(len(stay_survivor) + 1)}
        assert _hash(client, "test:usercount:1") == usercount
        assert len(client.keys("test:node:*")) == 1  # the victim's share is gone

        for _, sock in sockets:
            await sock.close()
        await observer.close()

    asyncio.run(main())


# The Lua twin of keys.encode/decode (_codec.lua), run in the real Redis.
_CODEC = (Path(scripts.__file__).parent / "_codec.lua").read_text() + (
    "local parts = {}\n"
    "for i = 1, #ARGV do parts[i] = ARGV[i] end\n"
    "local encoded = encode(unpack(parts))\n"
    "return {encoded, decode(KEYS[1])}\n"
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"])), max_size=5))
def test_the_scripts_encode_and_decode_as_python_does(
    redis_server: RedisServer,  # noqa: F811
    parts: list[str],
) -> None:
    client = redis.Redis(port=redis_server.port)
    encoded, decoded = client.eval(_CODEC, 1, keys.encode(*parts), *parts)
    assert encoded.decode() == keys.encode(*parts)
    assert [p.decode() for p in decoded] == parts
