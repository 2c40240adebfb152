"""The cluster on Redis: one package per job, all sharing one :class:`RedisLink`.

* :mod:`.link` — the connection, its health and reconnection, and ``guarded()``, the one
  way to fall back to this node's own view while Redis is not there;
* :mod:`.keys` — the key schema (every key and field, in one place);
* :mod:`.scripts` — the Lua scripts, as ``.lua`` files;
* :mod:`.pubsub` — :class:`RedisBroker`, fan-out between nodes;
* :mod:`.state` — :class:`RedisState`, the cluster-wide channel state;
* :mod:`.membership` — leases, reaping of dead nodes, re-registration, connection counts;
* :mod:`.ratelimit` — :class:`RedisRateLimiter`;
* :mod:`.jobs` — :class:`RedisJobStore` and :class:`RedisHeldMarks` for the webhook outbox.
"""

from clarion.cluster.redis.jobs import RedisHeldMarks, RedisJobStore
from clarion.cluster.redis.keys import RedisKeys
from clarion.cluster.redis.link import RedisLink
from clarion.cluster.redis.membership import Membership
from clarion.cluster.redis.pubsub import RedisBroker
from clarion.cluster.redis.ratelimit import RedisRateLimiter
from clarion.cluster.redis.state import RedisState

__all__ = [
    "Membership",
    "RedisBroker",
    "RedisHeldMarks",
    "RedisJobStore",
    "RedisKeys",
    "RedisLink",
    "RedisRateLimiter",
    "RedisState",
]
