"""Signed-in sockets and watchlists of one app on this node (clarion.hub.users.Users)."""

from __future__ import annotations

from clarion.hub.users import Users
from tests.support.fakes import FakeSubscriber


def test_a_user_s_first_and_last_socket_on_this_node_are_reported() -> None:
    users = Users()
    tab1, tab2 = FakeSubscriber("1.1"), FakeSubscriber("1.2")

    assert users.add(tab1, "alice")  # first
    assert not users.add(tab2, "alice")
    assert set(users.sockets("alice")) == {tab1, tab2}

    assert not users.remove(tab1, "alice")  # tab2 is still signed in
    assert users.sockets("alice") == [tab2]
    assert users.remove(tab2, "alice")  # last
    assert users.sockets("alice") == []


def test_removing_a_socket_that_is_not_signed_in_as_that_user_changes_nothing() -> None:
    users = Users()
    tab, stranger = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    assert not users.remove(tab, "alice")  # nobody signed in
    users.add(tab, "alice")
    assert not users.remove(stranger, "alice")
    assert not users.remove(tab, "bob")
    assert users.sockets("alice") == [tab]


def test_sockets_returns_a_copy_the_caller_may_iterate_while_sockets_leave() -> None:
    users = Users()
    tabs = [FakeSubscriber(f"1.{n}") for n in range(3)]
    for tab in tabs:
        users.add(tab, "alice")
    for tab in users.sockets("alice"):  # what terminate_user does: each one leaves
        users.remove(tab, "alice")
    assert users.sockets("alice") == []


def test_watch_reports_the_users_that_got_their_first_local_watcher() -> None:
    users = Users()
    first, second = FakeSubscriber("1.1"), FakeSubscriber("1.2")

    assert users.watch(first, ["bob", "carol"]) == ["bob", "carol"]
    assert users.watch(second, ["carol", "dave"]) == ["dave"]
    assert set(users.watchers("carol")) == {first, second}
    assert users.watchers("bob") == [first]
    assert users.watchers("erin") == []


def test_unwatch_reports_the_users_that_lost_their_last_local_watcher() -> None:
    users = Users()
    first, second = FakeSubscriber("1.1"), FakeSubscriber("1.2")
    users.watch(first, ["bob", "carol"])
    users.watch(second, ["carol"])

    assert users.unwatch(first) == ["bob"]
    assert users.watchers("carol") == [second]
    assert users.unwatch(first) == []  # already gone
    assert users.unwatch(second) == ["carol"]
    assert users.watchers("carol") == []


def test_an_empty_watchlist_registers_nothing() -> None:
    users = Users()
    sub = FakeSubscriber("1.1")
    assert users.watch(sub, []) == []
    assert users.unwatch(sub) == []
