"""subscription_count events as pusher-js sees them (docs/protocol.md §16).

With ``subscription_count_events = true`` the server tells a non-presence channel's
subscribers how many connections it has; pusher-js stores the count in
``channel.subscriptionCount`` and emits ``pusher:subscription_count``. Events are
coalesced to one per channel per 5 s, the first one going out within the server's
half-second sweep. This test waits out one such interval, so it takes about 5 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.config import OTHER_APP, app, build_config
from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

COUNT_CONFIG = build_config(app(subscription_count_events=True), OTHER_APP)

INTERVAL = 5.0
# The first event follows the change within the sweep (0.5 s); allow for a slow machine.
PROMPT = 1.5


def test_subscription_count_reaches_pusher_js_coalesced_every_5_seconds(
    make_server: Callable[..., RunningServer],
    make_driver: Callable[[RunningServer], Driver],
    uid: str,
) -> None:
    server = make_server(COUNT_CONFIG)
    js = make_driver(server)
    channel = f"counted-{uid}"
    off = {"key": "other-key", "secret": "other-secret", "app_id": "2"}
    quiet = js.client("quiet", **off)  # app 2: the feature is off
    quiet.subscribe(channel)
    first = js.client("first")

    subscribed_at = time.monotonic()
    first.subscribe(channel)
    one = first.wait(type="event", channel=channel, event="pusher:subscription_count")
    first_at = time.monotonic()
    assert one["data"] == {"subscription_count": 1}
    assert first_at - subscribed_at < PROMPT
    assert first.details(channel)["channel"]["subscription_count"] == 1

    # Two more join and one of them leaves again, all inside the 5 s that follow: one
    # event, with the count at the time it is sent.
    since = js.mark()
    second, third = js.client("second"), js.client("third")
    second.subscribe(channel)
    third.subscribe(channel)
    third.unsubscribe(channel)
    two = first.wait(
        type="event",
        channel=channel,
        event="pusher:subscription_count",
        since=since,
        timeout=INTERVAL + 3,
    )
    second_at = time.monotonic()
    assert two["data"] == {"subscription_count": 2}
    assert second_at - first_at > INTERVAL - 1.0
    seen_by_second = second.wait(type="event", channel=channel, event="pusher:subscription_count")
    assert seen_by_second["data"] == {"subscription_count": 2}
    for client in (first, second):
        assert client.details(channel)["channel"]["subscription_count"] == 2
    # Coalesced: a count of 3 would have come before the 2.
    counts = [r["data"] for r in first.find(event="pusher:subscription_count")]
    assert counts == [{"subscription_count": 1}, {"subscription_count": 2}]

    # App 2 has the feature off: its subscriber heard nothing in all that time (more
    # than ten sweeps); a published event closes the sequence.
    python_sdk(server, app_id="2", key="other-key", secret="other-secret").trigger(
        channel, "marker", {}
    )
    quiet.wait_event(channel, "marker")
    assert quiet.find(event="pusher:subscription_count") == []
    assert quiet.details(channel)["channel"]["subscription_count"] is None
