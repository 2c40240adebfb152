"""The Redis key schema: every node of a cluster must keep using exactly these keys."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

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


# --- Redis Cluster: hash tags ---------------------------------------------------------


def test_on_a_cluster_every_key_a_state_script_touches_shares_its_apps_slot() -> None:
    keys = RedisKeys("P", "N1", sharded=True)
    app = "A"
    touched = [
        *keys.channel_keys(app, "presence-c"),
        keys.left(app, "presence-c", "ann"),
        keys.users(app),
        keys.cache(app, "cache-c"),
        keys.countturn(app, "c"),
        keys.share(app, "N2"),
        keys.held(HeldKey(app, "member_removed", "presence-c", "a}b{c")),
        *keys.held_condition(HeldKey(app, "channel_vacated", "c", ""))[:1],
    ]
    # Keys the scripts build from the templates too (reap_share.lua, register_share.lua).
    touched += [_lua_format(t, app, "presence-c") for t in keys.script_templates()]
    assert {key_slot(k.encode()) for k in touched} == {key_slot(b"{A}")}
    assert keys.channel_keys(app, "c")[:2] == ["P:subs:{A}", "P:node:{A}:N1"]


def test_on_a_cluster_the_bookkeeping_shares_the_prefixs_slot_and_channels_spread() -> None:
    keys = RedisKeys("P", "N1", sharded=True)
    bookkeeping = [keys.nodes, keys.reaping, keys.round, keys.heard, keys.own_conns]
    bookkeeping += [keys.conns("N2"), keys.apps("N2")]
    assert {key_slot(k.encode()) for k in bookkeeping} == {key_slot(b"{P}")}
    assert keys.nodes == "P:{P}:nodes"
    due, jobs = keys.job_keys("Q")
    assert key_slot(due.encode()) == key_slot(jobs.encode())
    # Pub/sub channels carry no tag: one app's channels spread over the slots.
    channels = {key_slot(keys.redis_channel("A", f"c-{i}").encode()) for i in range(50)}
    assert len(channels) > 40


def test_standalone_keys_carry_no_tags_and_a_cluster_prefix_no_braces() -> None:
    keys = RedisKeys("P", "N1")
    assert keys.share("A") == keys.own_node == "P:node:N1"
    assert keys.share("A", "N2") == "P:node:N2"
    assert keys.left("A", "c", "u") == f"P:left:{encode('A', 'c', 'u')}"
    with pytest.raises(ValueError, match="may not contain"):
        RedisKeys("a{b}", "N1", sharded=True)
