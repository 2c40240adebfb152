"""With Redis configured, pending webhooks survive a restart of the node that queued them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pusher

from tests.support.cluster import RedisServer, cluster_config
from tests.support.raw import established, subscribe, ws_connect
from tests.support.server import RunningServer
from tests.support.webhook_receiver import Receiver

SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")


def test_pending_deliveries_are_sent_after_a_restart(
    receiver: Receiver, redis_server: RedisServer, make_server: Callable[..., RunningServer]
) -> None:
    receiver.scripts["/later"] = [503]  # down until the test says otherwise
    hooks = [{"url": f"{receiver.url}/later", "event_types": ["channel_occupied"]}]
    config = cluster_config(redis_server, webhooks=hooks)
    first = make_server(config)

    async def main() -> None:
        ws = await ws_connect(first.ws())
        await established(ws)
        await subscribe(ws, "durable")
        receiver.wait_for(lambda r: any(x.path == "/later" for x in r))
        await ws.close()

    asyncio.run(main())
    assert first.stop() == 0  # graceful: the job stays in Redis, not dropped
    lost = [line for line in first.output if "lost" in line]
    assert not lost, lost
    receiver.scripts["/later"] = [200]
    make_server(config)  # a new process: it finds the pending job and delivers it
    delivered = receiver.wait_for(
        lambda r: any(x.path == "/later" and x.status == 200 for x in r), timeout=15
    )
    ok = [r for r in delivered if r.status == 200]
    assert len(ok) == 1
    assert ok[0].payload["events"] == [{"name": "channel_occupied", "channel": "durable"}]
    assert (
        SDK.validate_webhook(
            ok[0].headers["x-pusher-key"], ok[0].headers["x-pusher-signature"], ok[0].body
        )
        is not None
    )
