"""Removal of the Redis keys a benchmark created, found by the unique token in their names.

Benchmarks share one Redis server with other runs (and other benchmarks), so
they never flush a database: each names its queues, workers and mirror prefix
with a token of its own and deletes only what carries that token.
"""

from __future__ import annotations

import os
from typing import cast

from redis import Redis

BINDING_SETS = ("_kombu.binding.*", "_kombu.binding_permanent.*")
BINDING_DEADLINES = "_kombu.binding_deadlines"


def delete_keys(client: Redis, *tokens: str) -> int:
    """Delete every key whose name contains one of ``tokens``, and drop their members from kombu's binding sets.

    kombu keeps the bindings of all queues of an exchange in shared sets
    (``_kombu.binding.<exchange>``, ``_kombu.binding_permanent.<exchange>``): a
    private queue bound to a shared exchange (a worker's ``celery.pidbox``)
    leaves a member there, not a key of its own. An exchange whose sets are
    empty then also leaves the deadline index that kombu sweeps them by.
    """
    deleted = 0
    for token in tokens:
        keys = list(client.scan_iter(match=f"*{token}*", count=1000))
        if keys:
            deleted += client.delete(*keys)
    for pattern in BINDING_SETS:
        for binding in client.scan_iter(match=pattern, count=1000):
            members = [m for m in client.smembers(binding) if any(t.encode() in m for t in tokens)]
            if members:
                client.srem(binding, *members)
    for exchange in cast(list[bytes], client.zrange(BINDING_DEADLINES, 0, -1)):  # members (bytes), no scores
        name = exchange.decode()
        if not client.exists(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"):
            client.zrem(BINDING_DEADLINES, exchange)
    return deleted


def clear_private_broker(client: Redis) -> None:
    """Empty the broker database a benchmark has to itself (the HTTP and stream benchmarks' web processes publish
    to the default queue): Celery's queues, kombu's bindings, and this run's publish receipts and broker epoch."""
    patterns = ("*celery*", "_kombu*", f"{os.environ['REDIS_KEY_PREFIX']}:*")
    keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
    if keys:
        client.delete(*keys)
