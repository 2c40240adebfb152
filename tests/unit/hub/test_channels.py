"""The hub on one node (clarion.hub.channels.Hub) with the in-memory state and broker:
subscriptions, publish and deliver, presence frames, subscription counts, terminate.

Subscribers are fakes with recording transports; no socket and no server is involved.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from clarion.cluster.interfaces import Member, PresenceFull
from clarion.cluster.memory import MemoryBroker, MemoryState
from clarion.config import AppConfig
from clarion.hub.channels import SUBSCRIPTION_COUNT_INTERVAL, Hub
from clarion.protocol import messages
from clarion.protocol.api import PublishRequest
from clarion.protocol.webhooks import WebhookEvent
from tests.support.fakes import BrokenTransport, FakeSubscriber, decode_frame

T = TypeVar("T")
APP = "1"


class RecordingSink:
    """The webhook outbox as the hub sees it: wants every event, keeps what it is given."""

    def __init__(self) -> None:
        self.emitted: list[WebhookEvent] = []

    def wants(self, app_id: str, name: str) -> bool:
        return True

    def emit(self, app_id: str, event: WebhookEvent) -> None:
        self.emitted.append(event)

    def names(self) -> list[str]:
        return [event["name"] for event in self.emitted]


def make_hub(**app_settings: Any) -> tuple[Hub, RecordingSink]:
    config = AppConfig(id=APP, key="app-key", secret="app-secret", **app_settings)
    sink = RecordingSink()
    hub = Hub(MemoryBroker(), MemoryState(), {APP: config}.get, sink)
    return hub, sink


def run(step: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(step)


def publish(hub: Hub, channel: str, name: str, data: str, socket_id: str | None = None) -> None:
    request = PublishRequest(
        name=name, channels=[channel], data=data, socket_id=socket_id, info=frozenset()
    )
    run(hub.publish(APP, request))


def join(hub: Hub, sub: FakeSubscriber, channel: str, user_id: str | None = None) -> list[bytes]:
    member = Member(user_id, {"name": user_id}) if user_id is not None else None
    return run(hub.subscribe(APP, sub, channel, member)).frames


def events_of(sub: FakeSubscriber) -> list[str]:
    return [frame["event"] for frame in sub.frames]


# --- subscribe and unsubscribe ------------------------------------------------------------


def test_subscribe_answers_subscription_succeeded_and_counts_the_socket() -> None:
    hub, sink = make_hub()
    sub = FakeSubscriber("1.1")

    subscribed = run(hub.subscribe(APP, sub, "news", None))

    assert subscribed.new
    assert [decode_frame(f) for f in subscribed.frames] == [
        {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"}
    ]
    assert hub.sizes() == {"channels": {APP: 1}, "subscriptions": {APP: 1}}
    assert sink.emitted == [{"name": "channel_occupied", "channel": "news"}]
    assert sub.transport.written == []  # the reply is the caller's to write


def test_a_duplicate_subscribe_changes_nothing_and_answers_again() -> None:
    hub, sink = make_hub()
    sub = FakeSubscriber("1.1")
    first = join(hub, sub, "news")

    again = run(hub.subscribe(APP, sub, "news", None))

    assert not again.new and again.frames == first
    counts = run(hub.state.channel_counts(APP, "news"))
    assert counts.subscription_count == 1
    assert sink.names() == ["channel_occupied"]


def test_unsubscribe_stops_deliveries_and_vacates_the_last_socket() -> None:
    hub, sink = make_hub()
    stays, leaves = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    join(hub, stays, "news")
    join(hub, leaves, "news")

    assert run(hub.unsubscribe(APP, leaves, "news"))
    assert not run(hub.unsubscribe(APP, leaves, "news"))
    publish(hub, "news", "after", '"x"')

    assert events_of(leaves) == []
    assert events_of(stays) == ["after"]
    assert "channel_vacated" not in sink.names()
    assert run(hub.unsubscribe(APP, stays, "news"))
    assert sink.emitted[-1] == {"name": "channel_vacated", "channel": "news"}
    assert hub.sizes() == {"channels": {APP: 0}, "subscriptions": {APP: 0}}


def test_unsubscribe_from_what_was_never_subscribed_is_false() -> None:
    hub, _ = make_hub()
    sub = FakeSubscriber("1.1")
    assert not run(hub.unsubscribe(APP, sub, "news"))  # no app yet
    join(hub, FakeSubscriber("1.2"), "news")
    assert not run(hub.unsubscribe(APP, sub, "news"))
    assert not run(hub.unsubscribe(APP, sub, "other"))


def test_server_to_user_channels_make_no_occupied_or_vacated_webhooks() -> None:
    hub, sink = make_hub()
    sub = FakeSubscriber("1.1")
    join(hub, sub, "#server-to-user-alice")
    run(hub.unsubscribe(APP, sub, "#server-to-user-alice"))
    assert sink.emitted == []


# --- publish and deliver --------------------------------------------------------------------


def test_publish_writes_the_same_bytes_once_to_each_subscriber() -> None:
    hub, _ = make_hub()
    subs = [FakeSubscriber(f"1.{n}") for n in range(3)]
    for sub in subs:
        join(hub, sub, "news")
    elsewhere = FakeSubscriber("2.1")
    join(hub, elsewhere, "sport")

    publish(hub, "news", "headline", '{"n":1}')

    frame = subs[0].transport.written[0]
    for sub in subs:
        assert len(sub.transport.written) == 1
        assert sub.transport.written[0] is frame  # encoded once, not per subscriber
    assert decode_frame(frame) == {"event": "headline", "channel": "news", "data": '{"n":1}'}
    assert elsewhere.transport.written == []


def test_publish_skips_the_excluded_socket() -> None:
    hub, _ = make_hub()
    sender, other = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    join(hub, sender, "news")
    join(hub, other, "news")

    publish(hub, "news", "excluded", '"x"', socket_id="1.1")
    publish(hub, "news", "everyone", '"y"')

    assert events_of(sender) == ["everyone"]
    assert events_of(other) == ["excluded", "everyone"]


def test_deliver_to_a_channel_or_app_without_local_subscribers_writes_nothing() -> None:
    hub, _ = make_hub()
    sub = FakeSubscriber("1.1")
    join(hub, sub, "news")
    frame = messages.event("e", "quiet", '"x"')
    hub.deliver(APP, "quiet", frame, None)
    hub.deliver("2", "news", frame, None)
    assert sub.transport.written == []


def test_a_subscriber_whose_transport_raises_does_not_stop_delivery_to_the_others() -> None:
    hub, _ = make_hub()
    before = FakeSubscriber("1.1")
    broken = FakeSubscriber("1.2", BrokenTransport())
    after = FakeSubscriber("1.3")
    for sub in (before, broken, after):
        join(hub, sub, "news")

    hub.deliver(APP, "news", messages.event("e", "news", '"x"'), None)

    assert events_of(before) == ["e"]
    assert events_of(after) == ["e"]


def test_a_subscriber_whose_transport_raises_is_removed_from_the_channel() -> None:
    async def main() -> None:
        hub, sink = make_hub()
        other = FakeSubscriber("1.1")
        broken = FakeSubscriber("1.2", BrokenTransport())
        await hub.subscribe(APP, other, "presence-room", Member("ann", {}))
        await hub.subscribe(APP, broken, "presence-room", Member("ben", {}))

        hub.deliver(APP, "presence-room", messages.event("e", "presence-room", '"x"'), None)
        await hub.settle()
        hub.outbox.flush()  # the member_removed the removal queued

        # Its leave was done for it: ben is gone for the cluster, and the others heard.
        assert await hub.state.presence_members(APP, "presence-room") == {"ann": {}}
        assert events_of(other)[-2:] == ["e", "pusher_internal:member_removed"]
        assert ("member_removed", "ben") in [(e["name"], e.get("user_id")) for e in sink.emitted]
        # The connection's own leave, coming later, finds nothing left to do.
        assert not await hub.unsubscribe(APP, broken, "presence-room")

    asyncio.run(main())


def test_a_leave_completes_when_its_announcement_meets_broken_sockets() -> None:
    hub, _ = make_hub()
    ann = FakeSubscriber("1.1", BrokenTransport())
    ben, cat = FakeSubscriber("1.2"), FakeSubscriber("1.3")
    for sub, user in ((ann, "ann"), (ben, "ben"), (cat, "cat")):
        join(hub, sub, "presence-room", user)
        join(hub, sub, "news")

    # ben leaves both channels; member_removed is written to ann's dead socket first.
    assert run(hub.unsubscribe(APP, ben, "presence-room"))
    assert run(hub.unsubscribe(APP, ben, "news"))

    assert "pusher_internal:member_removed" in events_of(cat)
    assert "ben" not in run(hub.state.presence_members(APP, "presence-room"))
    # ann's transport raised: it is taken out of every channel it was in (its socket is
    # gone for all of them), which leaves cat alone in news.
    assert "ann" not in run(hub.state.presence_members(APP, "presence-room"))
    assert run(hub.state.channel_counts(APP, "news")).subscription_count == 1


class FailingLeaveState(MemoryState):
    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str | None) -> Any:
        raise RuntimeError("the state failed")


def test_a_failing_step_of_a_leave_does_not_stop_the_rest() -> None:
    config = AppConfig(id=APP, key="app-key", secret="app-secret")
    hub = Hub(MemoryBroker(), FailingLeaveState(), {APP: config}.get)
    sub, other = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    for channel in ("a", "b"):
        join(hub, sub, channel)
        join(hub, other, channel)

    # Each channel is left locally even though the cluster-wide step fails (logged).
    assert run(hub.unsubscribe(APP, sub, "a")) and run(hub.unsubscribe(APP, sub, "b"))
    publish(hub, "b", "e", '"x"')
    assert events_of(sub) == [] and events_of(other) == ["e"]


def test_a_cache_channel_replays_the_last_event_and_reports_a_miss() -> None:
    hub, sink = make_hub()
    first = join(hub, FakeSubscriber("1.1"), "cache-empty")
    assert [decode_frame(f)["event"] for f in first] == [
        "pusher_internal:subscription_succeeded",
        "pusher:cache_miss",
    ]
    assert {"name": "cache_miss", "channel": "cache-empty"} in sink.emitted

    publish(hub, "cache-news", "older", '"1"')
    publish(hub, "cache-news", "latest", '"2"')
    frames = [decode_frame(f) for f in join(hub, FakeSubscriber("1.2"), "cache-news")]
    assert frames[1] == {"event": "latest", "channel": "cache-news", "data": '"2"'}


def test_a_client_event_reaches_the_others_but_never_the_sender() -> None:
    hub, sink = make_hub()
    sender, other = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    join(hub, sender, "private-room")
    join(hub, other, "private-room")
    frame = messages.client_event("client-hi", "private-room", {"x": 1}, None)

    hub.client_event(APP, sender, "private-room", frame, "client-hi", {"x": 1}, None)

    assert sender.transport.written == []
    assert other.transport.written == [frame]
    assert sink.emitted[-1]["name"] == "client_event"
    assert sink.emitted[-1]["socket_id"] == "1.1"


# --- presence -------------------------------------------------------------------------------


def test_presence_subscribe_lists_every_member_the_joiner_included() -> None:
    hub, _ = make_hub()
    join(hub, FakeSubscriber("1.1"), "presence-room", "ann")
    frames = join(hub, FakeSubscriber("1.2"), "presence-room", "ben")
    data = json.loads(decode_frame(frames[0])["data"])
    assert data["presence"]["count"] == 2
    assert data["presence"]["hash"] == {"ann": {"name": "ann"}, "ben": {"name": "ben"}}


def test_member_added_and_member_removed_go_to_the_other_members() -> None:
    hub, sink = make_hub()
    ann, ben, ben_again = FakeSubscriber("1.1"), FakeSubscriber("1.2"), FakeSubscriber("1.3")
    join(hub, ann, "presence-room", "ann")

    join(hub, ben, "presence-room", "ben")
    added = ann.frames
    assert [f["event"] for f in added] == ["pusher_internal:member_added"]
    assert json.loads(added[0]["data"]) == {"user_id": "ben", "user_info": {"name": "ben"}}
    assert ben.transport.written == []  # the joiner learns of itself from its own reply

    join(hub, ben_again, "presence-room", "ben")  # a second socket of the same user
    assert len(ann.transport.written) == 1
    run(hub.unsubscribe(APP, ben, "presence-room"))
    assert len(ann.transport.written) == 1  # ben is still there on his other socket

    run(hub.unsubscribe(APP, ben_again, "presence-room"))
    removed = ann.frames[-1]
    assert removed["event"] == "pusher_internal:member_removed"
    assert json.loads(removed["data"]) == {"user_id": "ben"}
    members = [(e["name"], e.get("user_id")) for e in sink.emitted if "member" in e["name"]]
    assert members == [("member_added", "ann"), ("member_added", "ben"), ("member_removed", "ben")]


def test_a_new_user_over_the_presence_limit_is_refused_and_not_counted() -> None:
    hub, _ = make_hub(max_presence_members=1)
    ann, ann_again, ben = FakeSubscriber("1.1"), FakeSubscriber("1.2"), FakeSubscriber("1.3")
    join(hub, ann, "presence-room", "ann")
    join(hub, ann_again, "presence-room", "ann")  # the same user: not a new member

    with pytest.raises(PresenceFull):
        join(hub, ben, "presence-room", "ben")

    counts = run(hub.state.channel_counts(APP, "presence-room"))
    assert (counts.subscription_count, counts.user_count) == (2, 1)
    assert hub.presence_user_of(APP, ann_again, "presence-room") == "ann"
    assert hub.presence_user_of(APP, ben, "presence-room") is None
    assert ann.transport.written == []  # no member_added for the refused user


# --- subscription_count ------------------------------------------------------------------------


def counts_of(sub: FakeSubscriber) -> list[int]:
    return [
        json.loads(f["data"])["subscription_count"]
        for f in sub.frames
        if f["event"] == "pusher_internal:subscription_count"
    ]


def test_subscription_counts_go_out_at_most_once_per_interval() -> None:
    hub, sink = make_hub(subscription_count_events=True)
    first, second, third = FakeSubscriber("1.1"), FakeSubscriber("1.2"), FakeSubscriber("1.3")
    join(hub, first, "news")
    join(hub, second, "news")
    now = time.monotonic()

    run(hub.flush_subscription_counts(now))
    assert counts_of(first) == [2] and counts_of(second) == [2]  # two changes, one event
    assert sink.emitted[-1] == {
        "name": "subscription_count",
        "channel": "news",
        "subscription_count": 2,
    }

    join(hub, third, "news")
    run(hub.flush_subscription_counts(now + 1))
    assert counts_of(first) == [2]  # within the interval: held back
    run(hub.flush_subscription_counts(now + SUBSCRIPTION_COUNT_INTERVAL))
    assert counts_of(first) == [2, 3] and counts_of(third) == [3]


def test_no_subscription_counts_for_presence_or_when_the_app_has_them_off() -> None:
    hub, _ = make_hub(subscription_count_events=True)
    member = FakeSubscriber("1.1")
    join(hub, member, "presence-room", "ann")
    run(hub.flush_subscription_counts(time.monotonic() + 1))
    assert counts_of(member) == []

    off, _ = make_hub()
    sub = FakeSubscriber("1.1")
    join(off, sub, "news")
    run(off.flush_subscription_counts(time.monotonic() + 1))
    assert sub.transport.written == []


# --- signed-in users ------------------------------------------------------------------------


def test_terminate_user_disconnects_every_socket_of_that_user_with_4009() -> None:
    hub, _ = make_hub()
    tabs = [FakeSubscriber("1.1"), FakeSubscriber("1.2")]
    bystander = FakeSubscriber("1.3")
    for tab in tabs:
        run(hub.sign_in(APP, tab, "alice", []))
    run(hub.sign_in(APP, bystander, "bob", []))

    hub.terminate_user(APP, "alice")

    for tab in tabs:
        assert tab.disconnected == [(4009, "You got disconnected by the app.")]
    assert bystander.disconnected == []


def test_watchers_hear_when_a_watched_user_comes_online_and_goes_offline() -> None:
    hub, sink = make_hub()
    watcher = FakeSubscriber("1.1")
    initial = run(hub.sign_in(APP, watcher, "watcher", ["bob"]))
    assert initial is not None
    assert json.loads(decode_frame(initial)["data"]) == {
        "events": [{"name": "offline", "user_ids": ["bob"]}]
    }

    bob = FakeSubscriber("1.2")
    assert run(hub.sign_in(APP, bob, "bob", [])) is None
    run(hub.sign_out(APP, bob, "bob"))

    seen = [json.loads(f["data"])["events"] for f in watcher.frames]
    assert seen == [
        [{"name": "online", "user_ids": ["bob"]}],
        [{"name": "offline", "user_ids": ["bob"]}],
    ]
    assert [e for e in sink.emitted if e.get("user_id") == "bob"] == [
        {"name": "user_online", "user_id": "bob"},
        {"name": "user_offline", "user_id": "bob"},
    ]
