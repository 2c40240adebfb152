"""Webhooks: the outbox the hub emits into, holds, batching, delivery and their stores.

``outbox`` takes the hub's events and decides; ``holds`` holds back the events a quick
opposite cancels; ``delivery`` queues, posts, signs and retries; ``stores`` keeps jobs
and hold marks in memory when there is no Redis; ``clock`` is their sense of time.
"""

from clarion.webhooks.outbox import Outbox

__all__ = ["Outbox"]
