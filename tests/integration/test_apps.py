"""Apps are isolated: same channel names, separate worlds; credentials are per app."""

from __future__ import annotations

import pytest
from pusher.errors import PusherBadAuth, PusherBadStatus, PusherForbidden

from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer


def test_events_never_cross_apps(js: Driver, server: RunningServer, uid: str) -> None:
    channel = f"shared-name-{uid}"
    app1 = python_sdk(server)
    app2 = python_sdk(server, app_id="2", key="other-key", secret="other-secret")
    on1 = js.client("on-app-1")
    on2 = js.client("on-app-2", key="other-key", secret="other-secret", app_id="2")
    on1.subscribe(channel)
    on2.subscribe(channel)

    app1.trigger(channel, "from-app-1", {"app": 1})
    app2.trigger(channel, "from-app-2", {"app": 2})

    assert on1.wait_event(channel, "from-app-1")["data"] == {"app": 1}
    assert on2.wait_event(channel, "from-app-2")["data"] == {"app": 2}
    # app 1's event was published first: had it reached app 2's subscriber, it would be
    # there already. For the other direction, a later app 1 event closes the sequence.
    assert on2.events(channel, "from-app-1") == []
    app1.trigger(channel, "later-app-1", {})
    on1.wait_event(channel, "later-app-1")
    assert on1.events(channel, "from-app-2") == []


def test_state_queries_are_per_app(js: Driver, server: RunningServer, uid: str) -> None:
    room = f"presence-room-{uid}"
    app1 = python_sdk(server)
    app2 = python_sdk(server, app_id="2", key="other-key", secret="other-secret")
    js.client("a1").subscribe(room, presence={"user_id": "a1", "user_info": {}})
    js.client("a2").subscribe(room, presence={"user_id": "a2", "user_info": {}})
    js.client("b1", key="other-key", secret="other-secret", app_id="2").subscribe(
        room, presence={"user_id": "b1", "user_info": {}}
    )

    assert app1.channel_info(room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 2,
    }
    assert sorted(u["id"] for u in app1.users_info(room)["users"]) == ["a1", "a2"]
    assert app2.users_info(room) == {"users": [{"id": "b1"}]}
    assert app2.channels_info(f"presence-room-{uid}", ["user_count"]) == {
        "channels": {room: {"user_count": 1}}
    }


def test_app_2_auth_does_not_open_app_1_private_channels(js: Driver, uid: str) -> None:
    """A client of app 1 whose authoriser signs with app 2's secret is refused (401)."""
    channel = f"private-room-{uid}"
    client = js.client("client", secret="other-secret")

    client.subscribe(channel, wait=False)

    assert client.wait(type="subscription_error", channel=channel)["data"]["status"] == 401


def test_http_api_with_another_apps_secret_is_401(server: RunningServer, uid: str) -> None:
    forged = python_sdk(server, app_id="1", key="app-key", secret="other-secret")
    with pytest.raises(PusherBadAuth):
        forged.trigger(f"my-channel-{uid}", "my-event", {})
    # app 2's credentials on app 1's path.
    mixed = python_sdk(server, app_id="1", key="other-key", secret="other-secret")
    with pytest.raises(PusherBadAuth):
        mixed.channels_info()


def test_disabled_app_http_api_is_403(server: RunningServer, uid: str) -> None:
    disabled = python_sdk(server, app_id="3", key="disabled-key", secret="disabled-secret")
    with pytest.raises(PusherForbidden):
        disabled.trigger(f"my-channel-{uid}", "my-event", {})


def test_unknown_app_id_is_404(server: RunningServer) -> None:
    unknown = python_sdk(server, app_id="999")
    with pytest.raises(PusherBadStatus, match=r"^404"):
        unknown.channels_info()
