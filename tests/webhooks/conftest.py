"""Webhook tests against a real redis-server use the cluster tests' fixture."""

from tests.cluster.conftest import redis_server

__all__ = ["redis_server"]
