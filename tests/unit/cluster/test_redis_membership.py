"""What reaping a node reports: reap.lua's flat replies as typed changes."""

from __future__ import annotations

from clarion.cluster.interfaces import ChannelVacated, MemberRemoved, UserOffline
from clarion.cluster.redis.keys import SEP
from clarion.cluster.redis.membership import reaped_changes


def test_reaped_replies_become_typed_changes_members_first() -> None:
    reply = [
        SEP.join(("v", "1", "presence-room")).encode(),
        SEP.join(("o", "1", "ann")).encode(),
        SEP.join(("r", "1", "presence-room", "ann")).encode(),
        SEP.join(("v", "2", "chat")),
        SEP.join(("r", "1", "presence-room", "bob")).encode(),
    ]
    assert reaped_changes(reply) == [
        MemberRemoved("1", "presence-room", "ann"),
        MemberRemoved("1", "presence-room", "bob"),
        ChannelVacated("1", "presence-room"),
        ChannelVacated("2", "chat"),
        UserOffline("1", "ann"),
    ]


def test_nothing_reaped_is_no_change() -> None:
    assert reaped_changes([]) == []
