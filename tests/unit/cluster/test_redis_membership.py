"""What reaping a node reports: reap.lua's replies (one array per change) as typed changes."""

from __future__ import annotations

from clarion.cluster.interfaces import ChannelVacated, MemberRemoved, UserOffline
from clarion.cluster.redis.membership import reaped_changes


def test_reaped_replies_become_typed_changes_members_first() -> None:
    reply = [
        [b"v", 7, b"1", b"presence-room"],
        [b"o", 0, b"1", b"ann"],
        [b"r", 7, b"1", b"presence-room", b"ann"],
        ["v", 9, "2", "chat"],
        [b"r", 7, b"1", b"presence-room", b"bob\x1fx\x00:%"],
    ]
    assert reaped_changes(reply) == [
        MemberRemoved("1", "presence-room", "ann", 7),
        MemberRemoved("1", "presence-room", "bob\x1fx\x00:%", 7),
        ChannelVacated("1", "presence-room"),
        ChannelVacated("2", "chat"),
        UserOffline("1", "ann"),
    ]


def test_nothing_reaped_is_no_change() -> None:
    assert reaped_changes([]) == []
