"""Each presence member announced once: the hub against a cluster state that versions its
changes (as the Redis one does), with joins that can be held mid-way.

A member list read at version v holds every change of a version <= v, so a member event
of such a version is not sent to that socket again; frames that reach a socket while its
subscribe is under way follow its subscription_succeeded; and the node listens to the
channel before the join is counted, so that no later member event can pass it by.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from clarion.cluster.interfaces import Joined, Left, Member, PresenceFull
from clarion.cluster.memory import MemoryBroker, MemoryState
from clarion.hub import presence
from clarion.hub.channels import Hub
from clarion.hub.presence import unversioned, versioned
from clarion.protocol import messages
from tests.support.fakes import FakeSubscriber

APP = "1"
ROOM = "presence-room"


class VersionedState(MemoryState):
    """MemoryState numbering its joins and leaves, each join held until released."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 100
        self.gates: dict[str, asyncio.Event] = {}
        self.calls: list[str] = []

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member | None, member_limit: int
    ) -> Joined:
        self.calls.append(f"join {socket_id}")
        gate = self.gates.get(socket_id)
        if gate is not None:
            await gate.wait()
        joined = await super().join(app_id, channel, socket_id, member, member_limit)
        self.version += 1
        joined.version = self.version
        return joined

    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str | None) -> Left:
        left = await super().leave(app_id, channel, socket_id, user_id)
        self.version += 1
        left.version = self.version
        return left


class WatchingBroker(MemoryBroker):
    """A broker that must be asked to listen, and records when it is."""

    needs_watch = True

    def __init__(self, state: VersionedState) -> None:
        super().__init__()
        self.state = state
        self.unwatched: list[str] = []

    async def watch(self, app_id: str, channel: str) -> None:
        self.state.calls.append(f"watch {channel}")

    def unwatch(self, app_id: str, channel: str) -> None:
        self.unwatched.append(channel)


def make_hub() -> tuple[Hub, VersionedState, WatchingBroker]:
    state = VersionedState()
    broker = WatchingBroker(state)
    return Hub(broker, state, lambda app_id: None), state, broker


def member_event(name: str, user_id: str) -> bytes:
    return messages.event(name, ROOM, messages.json_string({"user_id": user_id}))


def seen(sub: FakeSubscriber) -> list[tuple[str, Any]]:
    """(event, user ids listed or the user_id of the event) of each frame sent."""
    out: list[tuple[str, Any]] = []
    for frame in sub.frames:
        data = json.loads(frame["data"])
        if frame["event"] == "pusher_internal:subscription_succeeded":
            out.append((frame["event"], sorted(data["presence"]["ids"])))
        else:
            out.append((frame["event"], data.get("user_id")))
    return out


async def joining(state: VersionedState, socket_id: str) -> None:
    """Let the loop run until the socket's join has reached the state (a few steps)."""
    for _ in range(100):
        if f"join {socket_id}" in state.calls:
            return
        await asyncio.sleep(0)
    raise AssertionError("the join never reached the state")


async def held_subscribe(
    hub: Hub, state: VersionedState, sub: FakeSubscriber, user: str
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A subscribe whose join has reached the state and waits there for the event."""
    state.gates[sub.socket_id] = gate = asyncio.Event()
    task = asyncio.create_task(subscribe(hub, sub, user))
    await joining(state, sub.socket_id)
    return task, gate


async def subscribe(hub: Hub, sub: FakeSubscriber, user: str) -> None:
    subscribed = await hub.subscribe(APP, sub, ROOM, Member(user, None))
    for frame in subscribed.frames:
        sub.transport.write(frame)


def test_a_version_travels_with_the_frame_and_comes_off_again() -> None:
    frame = member_event("pusher_internal:member_added", "ann")
    assert unversioned(versioned(frame, 1764790000123456)) == (frame, 1764790000123456)
    assert unversioned(frame) == (frame, None)
    assert versioned(frame, None) is frame


def test_a_member_event_the_list_holds_already_is_not_sent_again() -> None:
    async def main() -> None:
        hub, _, _ = make_hub()
        old, new = FakeSubscriber("1.1"), FakeSubscriber("1.2")
        await subscribe(hub, old, "ann")  # version 101
        await subscribe(hub, new, "ben")  # version 102: its list holds ann and ben
        # Another node's member_added of version 102 (say, for "cat") came late: the
        # newer list accounts for it already; the older subscriber still needs it.
        late = versioned(member_event("pusher_internal:member_added", "cat"), 102)
        hub.deliver(APP, ROOM, late, None)
        hub.outbox.flush()  # the end of the loop's turn
        assert ("pusher_internal:member_added", "cat") in seen(old)
        assert ("pusher_internal:member_added", "cat") not in seen(new)
        later = versioned(member_event("pusher_internal:member_removed", "cat"), 103)
        hub.deliver(APP, ROOM, later, None)
        hub.outbox.flush()
        assert seen(new)[-1] == ("pusher_internal:member_removed", "cat")

    asyncio.run(main())


def test_frames_during_a_subscribe_follow_its_list_and_once_only() -> None:
    async def main() -> None:
        hub, state, _ = make_hub()
        sub = FakeSubscriber("1.1")
        task, gate = await held_subscribe(hub, state, sub, "ann")
        assert state.calls == [f"watch {ROOM}", "join 1.1"]  # listening before the join
        # While the join is on its way: a member event the list will hold (version 101
        # < the join's 102) and one it will not (103), and an ordinary event.
        before = versioned(member_event("pusher_internal:member_added", "ben"), 101)
        after = versioned(member_event("pusher_internal:member_added", "cat"), 103)
        hub.deliver(APP, ROOM, before, None)
        hub.deliver(APP, ROOM, messages.event("news", ROOM, "{}"), None)
        hub.deliver(APP, ROOM, after, None)
        assert sub.transport.written == []  # nothing before subscription_succeeded
        state.version = 101
        gate.set()
        await task
        assert seen(sub) == [
            ("pusher_internal:subscription_succeeded", ["ann"]),
            ("news", None),
            ("pusher_internal:member_added", "cat"),
        ]

    asyncio.run(main())


def test_a_socket_flooded_while_subscribing_is_closed(monkeypatch: Any) -> None:
    monkeypatch.setattr(presence, "JOIN_BUFFER_BYTES", 1000)

    async def main() -> None:
        hub, state, _ = make_hub()
        sub = FakeSubscriber("1.1")
        task, gate = await held_subscribe(hub, state, sub, "ann")
        for _ in range(20):
            hub.deliver(APP, ROOM, messages.event("news", ROOM, "x" * 100), None)
        gate.set()
        await task
        assert sub.disconnected == [(4100, "Too many messages for the channel while subscribing")]
        assert [e for e, _ in seen(sub)] == ["pusher_internal:subscription_succeeded"]

    asyncio.run(main())


def test_a_refused_join_leaves_nothing_behind() -> None:
    async def main() -> None:
        hub, _, broker = make_hub()
        hub.presence_limit = lambda app_id: 0  # type: ignore[method-assign]
        sub = FakeSubscriber("1.1")
        try:
            await subscribe(hub, sub, "ann")
        except PresenceFull:
            pass
        else:
            raise AssertionError("the join was not refused")
        app = hub.app(APP)
        assert (app.joining, app.channels, app.listed, app.listening) == ({}, {}, {}, {})
        assert broker.unwatched == [ROOM]

    asyncio.run(main())


def test_leaving_forgets_the_list_version() -> None:
    async def main() -> None:
        hub, _, broker = make_hub()
        sub = FakeSubscriber("1.1")
        await subscribe(hub, sub, "ann")
        assert hub.app(APP).listed == {ROOM: {sub: 101}}
        assert await hub.unsubscribe(APP, sub, ROOM)
        assert (hub.app(APP).listed, hub.app(APP).members) == ({}, {})
        assert broker.unwatched == [ROOM]

    asyncio.run(main())
