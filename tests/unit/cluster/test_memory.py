"""The single-process cluster backends: MemoryState, MemoryBroker, MemoryRateLimiter.

Every MemoryState method completes without suspending (its callers' awaits cost next to
nothing), so the tests step each coroutine once with ``done()`` instead of running a loop.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from clarion.cluster import memory
from clarion.cluster.interfaces import CachedEvent, ChannelCounts, Member, PresenceFull
from clarion.cluster.memory import MemoryBroker, MemoryRateLimiter, MemoryState

T = TypeVar("T")
NO_LIMIT = 1 << 30


def done(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that must complete without suspending."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(memory.time, "monotonic", fake)
    yield fake


# --- join / leave -----------------------------------------------------------------------


def test_the_first_join_occupies_and_the_last_leave_vacates() -> None:
    state = MemoryState()
    first = done(state.join("1", "chat", "1.1", None, NO_LIMIT))
    second = done(state.join("1", "chat", "1.2", None, NO_LIMIT))
    assert (first.occupied, second.occupied) == (True, False)
    assert first.members is None and not first.member_added

    left = done(state.leave("1", "chat", "1.1", None))
    assert not left.vacated and not left.member_removed
    assert done(state.channel_counts("1", "chat")) == ChannelCounts(1, 0)
    assert done(state.leave("1", "chat", "1.2", None)).vacated
    assert done(state.channel_counts("1", "chat")) == ChannelCounts(0, 0)
    # Occupied again after being vacated.
    assert done(state.join("1", "chat", "1.3", None, NO_LIMIT)).occupied


def test_channels_of_different_apps_are_counted_apart() -> None:
    state = MemoryState()
    assert done(state.join("1", "chat", "1.1", None, NO_LIMIT)).occupied
    assert done(state.join("2", "chat", "2.1", None, NO_LIMIT)).occupied
    assert done(state.leave("1", "chat", "1.1", None)).vacated
    assert done(state.channel_counts("2", "chat")) == ChannelCounts(1, 0)


# --- presence -----------------------------------------------------------------------------


def test_a_member_is_added_with_its_first_socket_and_removed_with_its_last() -> None:
    state = MemoryState()
    ann = Member("ann", {"name": "Ann"})
    joined = done(state.join("1", "presence-room", "1.1", ann, NO_LIMIT))
    assert joined.member_added and joined.occupied
    assert joined.members == {"ann": {"name": "Ann"}}

    again = done(state.join("1", "presence-room", "1.2", Member("ann", {"name": "x"}), NO_LIMIT))
    assert not again.member_added and not again.occupied
    # The first user_info stored wins for a user with several sockets.
    assert again.members == {"ann": {"name": "Ann"}}

    bob = done(state.join("1", "presence-room", "1.3", Member("bob", None), NO_LIMIT))
    assert bob.members == {"ann": {"name": "Ann"}, "bob": None}
    assert done(state.channel_counts("1", "presence-room")) == ChannelCounts(3, 2)
    assert sorted(done(state.presence_user_ids("1", "presence-room"))) == ["ann", "bob"]

    assert not done(state.leave("1", "presence-room", "1.1", "ann")).member_removed
    last = done(state.leave("1", "presence-room", "1.2", "ann"))
    assert last.member_removed and not last.vacated
    assert done(state.presence_members("1", "presence-room")) == {"bob": None}
    gone = done(state.leave("1", "presence-room", "1.3", "bob"))
    assert gone.member_removed and gone.vacated
    assert done(state.presence_members("1", "presence-room")) == {}
    assert done(state.presence_user_ids("1", "presence-room")) == []


def test_a_full_presence_channel_refuses_new_users_but_not_more_sockets_of_a_member() -> None:
    state = MemoryState()
    done(state.join("1", "presence-room", "1.1", Member("ann", 1), 2))
    done(state.join("1", "presence-room", "1.2", Member("bob", 2), 2))
    with pytest.raises(PresenceFull):
        done(state.join("1", "presence-room", "1.3", Member("cat", 3), 2))
    # Refused: nothing counted.
    assert done(state.channel_counts("1", "presence-room")) == ChannelCounts(2, 2)
    assert not done(state.join("1", "presence-room", "1.4", Member("ann", 1), 2)).member_added


def test_a_presence_channel_refused_when_empty_leaves_nothing_behind() -> None:
    state = MemoryState()
    with pytest.raises(PresenceFull):
        done(state.join("1", "presence-room", "1.1", Member("ann", 1), 0))
    assert state.shares()[1] == {}


# --- signed-in users ------------------------------------------------------------------------


def test_a_user_comes_online_with_the_first_socket_and_goes_offline_with_the_last() -> None:
    state = MemoryState()
    assert done(state.sign_in("1", "ann", "1.1"))
    assert not done(state.sign_in("1", "ann", "1.2"))
    assert done(state.online("1", ["ann", "bob"])) == {"ann"}
    assert done(state.online("2", ["ann"])) == set()
    assert not done(state.sign_out("1", "ann", "1.1"))
    assert done(state.sign_out("1", "ann", "1.2"))
    assert done(state.online("1", ["ann"])) == set()


def test_shares_hold_what_this_node_counted() -> None:
    state = MemoryState()
    done(state.join("1", "chat", "1.1", None, NO_LIMIT))
    done(state.join("1", "presence-room", "1.1", Member("ann", {"a": 1}), NO_LIMIT))
    done(state.sign_in("1", "ann", "1.1"))
    sockets, members, signed_in = state.shares()
    assert sockets == {"1": {"chat": 1, "presence-room": 1}}
    assert members == {("1", "presence-room"): {"ann": [{"a": 1}, 1]}}
    assert signed_in == {("1", "ann"): 1}


# --- cache channels -------------------------------------------------------------------------


def test_a_cached_event_is_kept_for_its_ttl(clock: Clock) -> None:
    state = MemoryState()
    assert done(state.cache_get("1", "cache-news")) is None
    done(state.cache_put("1", "cache-news", "update", '{"n":1}', 60))
    assert done(state.cache_get("1", "cache-news")) == CachedEvent("update", '{"n":1}', 60)
    clock.now += 59.5
    assert done(state.cache_get("1", "cache-news")) == CachedEvent("update", '{"n":1}', 0)
    clock.now += 0.5
    assert done(state.cache_get("1", "cache-news")) is None
    assert done(state.cache_get("2", "cache-news")) is None


def test_housekeeping_drops_expired_events_nobody_read(clock: Clock) -> None:
    state = MemoryState()
    done(state.cache_put("1", "cache-old", "e", "d", 10))
    done(state.cache_put("1", "cache-new", "e", "d", 100))
    clock.now += 50
    done(state.housekeeping())
    assert list(state._cache) == [("1", "cache-new")]


# --- listings ------------------------------------------------------------------------------


def test_occupied_channels_lists_counts_by_prefix_without_server_to_user_channels() -> None:
    state = MemoryState()
    for socket_id, channel in [
        ("1.1", "chat"),
        ("1.2", "chat"),
        ("1.1", "private-a"),
        ("1.1", "#server-to-user-ann"),
    ]:
        done(state.join("1", channel, socket_id, None, NO_LIMIT))
    done(state.join("1", "presence-room", "1.1", Member("ann", None), NO_LIMIT))
    done(state.join("1", "presence-room", "1.2", Member("bob", None), NO_LIMIT))
    done(state.join("2", "elsewhere", "2.1", None, NO_LIMIT))

    every = done(state.occupied_channels("1", "", False))
    assert dict(zip(every.names, every.subscription_counts, strict=True)) == {
        "chat": "2",
        "private-a": "1",
        "presence-room": "2",
    }
    assert every.user_counts is None

    presence = done(state.occupied_channels("1", "presence-", True))
    assert (presence.names, presence.subscription_counts) == (["presence-room"], ["2"])
    assert presence.user_counts == ["2"]
    assert done(state.occupied_channels("3", "", True)).names == []


def test_the_listing_version_grows_with_every_change_of_an_apps_counts() -> None:
    state = MemoryState()
    start = done(state.listing_version("1"))
    done(state.join("1", "chat", "1.1", None, NO_LIMIT))
    joined = done(state.listing_version("1"))
    assert joined is not None and start is not None and joined > start
    assert done(state.occupied_channels("1", "", False)).version == joined
    done(state.leave("1", "chat", "1.1", None))
    left = done(state.listing_version("1"))
    assert left is not None and left > joined
    assert done(state.listing_version("2")) == start  # other apps: untouched


def test_the_memory_state_needs_no_count_turn_and_is_always_ready() -> None:
    state = MemoryState()
    assert done(state.claim_count_turn("1", "chat", 5.0)) == 0.0
    assert done(state.ready())


# --- broker -------------------------------------------------------------------------------


def test_a_publish_goes_straight_to_this_nodes_hub() -> None:
    broker = MemoryBroker()
    delivered: list[tuple[str, str, bytes, str | None]] = []
    broker.bind(lambda *args: delivered.append(args))
    broker.publish("1", "chat", b"frame", "1.1")
    broker.publish("1", "chat", b"next", None)
    assert delivered == [("1", "chat", b"frame", "1.1"), ("1", "chat", b"next", None)]
    assert broker.ready() and not broker.needs_watch


# --- rate limiter ------------------------------------------------------------------------


def test_a_bucket_allows_its_rate_then_refills_continuously(clock: Clock) -> None:
    limiter = MemoryRateLimiter()
    assert done(limiter.consume("k", 8, 10))
    assert not done(limiter.consume("k", 3, 10))  # 2 left: short, nothing taken
    assert done(limiter.consume("k", 2, 10))
    assert not done(limiter.consume("k", 1, 10))
    clock.now += 0.5  # refills 5
    assert done(limiter.consume("k", 5, 10))
    assert not done(limiter.consume("k", 1, 10))
    assert done(limiter.consume("other", 10, 10))  # buckets are apart
    clock.now += 100  # never above capacity
    assert not done(limiter.consume("k", 11, 10))
    assert done(limiter.consume("k", 10, 10))
