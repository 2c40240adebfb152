"""The Redis key schema: every node of a cluster must keep using exactly these keys."""

from __future__ import annotations

import re

import pytest

from clarion.cluster.interfaces import HeldKey
from clarion.cluster.redis import scripts
from clarion.cluster.redis.keys import RedisKeys, encode


@pytest.fixture
def keys() -> RedisKeys:
    return RedisKeys("P", "N1")


def test_the_cluster_state_keys(keys: RedisKeys) -> None:
    assert keys.subs("A") == "P:subs:A"
    assert keys.members("A", "presence-c") == "P:members:A:presence-c"
    assert keys.info("A", "presence-c") == "P:info:A:presence-c"
    assert keys.usercount("A") == "P:usercount:A"
    assert keys.ver("A") == "P:ver:A"
    assert keys.users("A") == "P:users:A"
    assert keys.cache("A", "cache-c") == "P:cache:A:cache-c"
    assert keys.countturn("A", "c") == "P:countturn:A:c"


def test_the_node_keys(keys: RedisKeys) -> None:
    assert keys.nodes == "P:nodes"
    assert keys.node("N2") == "P:node:N2"
    assert keys.own_node == "P:node:N1"
    assert keys.conns("N2") == "P:conns:N2"
    assert keys.own_conns == "P:conns:N1"
    assert keys.node_id == "N1"


def test_fan_out_rate_limit_and_webhook_keys(keys: RedisKeys) -> None:
    assert keys.redis_channel("A", "private-c") == "P:ch:A:private-c"
    assert keys.redis_channel("A", "c").startswith(keys.channel_prefix)
    assert keys.rate("api:A", 1700000000) == "P:rate:api:A:1700000000"
    assert keys.job_keys("Q") == ["P:wh:due:Q", "P:wh:jobs:Q"]


def test_a_held_mark_length_prefixes_its_parts(keys: RedisKeys) -> None:
    key = HeldKey("A", "member_removed", "presence-c", "ann")
    assert keys.held(key) == "P:held:1:A14:member_removed10:presence-c3:ann"
    offline = HeldKey("A", "user_offline", "", "ann")
    assert keys.held(offline) == "P:held:1:A12:user_offline0:3:ann"
    assert keys.held(offline) == "P:held:" + encode(*offline)


def test_held_marks_of_different_events_never_share_a_key(keys: RedisKeys) -> None:
    # Under a separator these two were one key: "1", "x", "c\x1fd", "" / "1", "x", "c", "d".
    assert keys.held(HeldKey("1", "x", "c\x1fd", "")) != keys.held(HeldKey("1", "x", "c", "d"))


def test_a_held_event_still_holds_while_its_field_is_absent(keys: RedisKeys) -> None:
    assert keys.held_condition(HeldKey("A", "channel_vacated", "c", "")) == ("P:subs:A", "c")
    assert keys.held_condition(HeldKey("A", "member_removed", "presence-c", "ann")) == (
        "P:members:A:presence-c",
        "ann",
    )
    assert keys.held_condition(HeldKey("A", "user_offline", "", "ann")) == ("P:users:A", "ann")


def test_join_and_leave_get_their_keys_in_the_scripts_order(keys: RedisKeys) -> None:
    assert keys.channel_keys("A", "presence-c") == [
        "P:subs:A",
        "P:node:N1",
        "P:members:A:presence-c",
        "P:info:A:presence-c",
        "P:usercount:A",
        "P:ver:A",
    ]


def _lua_format(template: str, *values: str) -> str:
    """string.format with only %s and %%, as the scripts use it."""
    parts = iter(values)
    return re.sub(r"%[s%]", lambda m: "%" if m.group() == "%%" else next(parts), template)


def test_the_scripts_key_templates_build_the_same_keys() -> None:
    keys = RedisKeys("odd%prefix", "N1")
    ver, subs, members, info, usercount, users = keys.script_templates()
    assert _lua_format(ver, "A") == keys.ver("A") == "odd%prefix:ver:A"
    assert _lua_format(subs, "A") == keys.subs("A")
    assert _lua_format(members, "A", "c") == keys.members("A", "c") == "odd%prefix:members:A:c"
    assert _lua_format(info, "A", "c") == keys.info("A", "c")
    assert _lua_format(usercount, "A") == keys.usercount("A")
    assert _lua_format(users, "A") == keys.users("A")


def test_the_templates_are_read_in_the_order_they_are_passed() -> None:
    # _keys.lua reads the last six ARGV in the order script_templates() gives them.
    source = scripts.source("reap")
    names = re.findall(r"K\.(\w+)", source.split("local K = {}")[1].split("end")[0])
    assert names == ["ver", "subs", "members", "info", "usercount", "users"]
