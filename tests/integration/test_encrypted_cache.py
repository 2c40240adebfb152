"""``private-encrypted-cache-`` channels through pusher-js (docs/protocol.md §15, §17).

``pusher:`` events bypass decryption in pusher-js, so ``pusher:cache_miss`` reaches the
application's binding; a cached encrypted event is replayed as it was published and
pusher-js decrypts it like a live one.
"""

from __future__ import annotations

import base64
import json

import pusher

from tests.support.pusherjs import Driver
from tests.support.sdk import python_sdk
from tests.support.server import RunningServer

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def _encrypting_sdk(server: RunningServer) -> pusher.Pusher:
    return python_sdk(server, encryption_master_key_base64=MASTER_KEY)


def test_cache_miss_passes_through_pusher_js_on_an_encrypted_cache_channel(
    js: Driver, server: RunningServer, uid: str
) -> None:
    channel = f"private-encrypted-cache-{uid}"
    client = js.client("client", raw=True, master_key=MASTER_KEY)

    client.subscribe(channel)

    miss = client.wait(type="cache_miss", channel=channel)
    assert miss["data"] is None
    assert client.wait_frame("pusher:cache_miss", channel) == {
        "event": "pusher:cache_miss",
        "channel": channel,
    }
    # Live encrypted events still arrive and are decrypted.
    _encrypting_sdk(server).trigger(channel, "live", {"v": 1})
    assert client.wait_event(channel, "live")["data"] == {"v": 1}


def test_cached_encrypted_event_is_replayed_and_decrypted(
    js: Driver, server: RunningServer, uid: str
) -> None:
    channel = f"private-encrypted-cache-{uid}"
    _encrypting_sdk(server).trigger(channel, "state", {"secret": "cached"})
    client = js.client("late", raw=True, master_key=MASTER_KEY)

    client.subscribe(channel)

    assert client.wait_event(channel, "state")["data"] == {"secret": "cached"}
    wire = json.loads(client.wait_frame("state", channel)["data"])
    assert set(wire) == {"nonce", "ciphertext"}
    assert client.find(type="cache_miss") == []
