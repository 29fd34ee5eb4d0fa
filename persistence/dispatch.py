"""Which queued tasks' messages the broker lost: its epoch marker and the receipts of publishes.

Re-publishing by age amplifies a backlog (every task of a long queue is "queued
for long"), so only what is known lost is published again. Two records live in
the broker's own Redis, where a flush or a restart without persistence removes
them together with the messages:

- the **epoch** (``{REDIS_KEY_PREFIX}:broker:epoch``), a random token written
  when absent. Each queued task records in SQL the epoch under which the broker
  confirmed its publish (``Task.dispatch_epoch``); a task confirmed under an
  epoch that is gone lost its message, and is re-published once, at once;
- the **receipts** (``{REDIS_KEY_PREFIX}:broker:receipts``), a sorted set of
  task id (the Crux task's, not the Celery id of the publish) -> publish time,
  added once the messages of a publish reached the broker (``tasks.dispatch.published``,
  in whichever process published; one round trip per batch). The sweep moves
  them into SQL in bulk (no extra write per submit). A queued task without a
  receipt newer than its dispatch was never published (the publish failed, or
  its process died between commit and publish): it is re-published after
  ``REDISPATCH_AFTER_SECONDS``, the wait doubling per try.

A broker that is not Redis has no epoch: the conservative age rule
(``services.redispatch_stale``) applies there.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError

from tasks import services
from tasks.dispatch import published

logger = logging.getLogger(__name__)

# Receipts older than this many seconds before a sweep are dropped by it (their tasks were confirmed or moved on);
# at least a minute, against clock skew between the processes that publish and the one that sweeps.
_MIN_RECEIPT_HORIZON = 60.0


@lru_cache(maxsize=4)
def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=settings.REDIS_TIMEOUT, socket_connect_timeout=settings.REDIS_TIMEOUT)


def client() -> Redis:
    """A client of the broker's Redis (not the mirror's: the epoch must vanish with the messages)."""
    return _client(settings.CELERY_BROKER_URL)


def epoch_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:broker:epoch"


def receipts_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:broker:receipts"


def queue_keys(queue: str) -> list[str]:
    """The broker's Redis lists of a Celery queue, served first to last: one per priority step (kombu's
    ``priority_steps``; the first step's list is named after the queue itself)."""
    from kombu.transport.redis import Channel

    steps = settings.CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"]
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in steps if step]


def queued_count(conn: Redis, queue: str) -> int:
    """Messages waiting in a Celery queue on a Redis broker, whatever their priority."""
    pipe = conn.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def current_epoch(conn: Redis) -> str:
    """The broker's epoch, started now if the broker has none (first use, or after a flush or restart)."""
    pipe = conn.pipeline(transaction=False)
    pipe.set(epoch_key(), uuid.uuid4().hex, nx=True)
    pipe.get(epoch_key())
    value = pipe.execute()[1]
    return value.decode() if isinstance(value, bytes) else str(value)


def record_receipts(sender: Any = None, task_ids: list[Any] | None = None, **kwargs: Any) -> None:
    """After tasks' messages reached the broker: note their receipts (a failure only costs a later re-publish)."""
    if not task_ids or not settings.BROKER_IS_REDIS:
        return
    now = time.time()
    try:
        client().zadd(receipts_key(), {str(task_id): now for task_id in task_ids})
    except RedisError as exc:
        logger.warning("receipts of the publish of %d task(s) not recorded: %s", len(task_ids), exc)


def connect() -> None:
    published.connect(record_receipts, dispatch_uid="persistence.dispatch.receipts", weak=False)


def redispatch_lost(*, base_seconds: float | None = None) -> int:
    """Publish again the queued tasks whose message is known lost; returns how many. Raises RedisError if the
    broker's Redis cannot be reached (nothing can be published then either)."""
    base = settings.REDISPATCH_AFTER_SECONDS if base_seconds is None else base_seconds
    if not settings.BROKER_IS_REDIS:
        return services.redispatch_stale(base_seconds=base)
    conn = client()
    started = time.time()
    epoch = current_epoch(conn)
    now = timezone.now()
    redispatched = 0
    for batch in services.unconfirmed_dispatches(epoch):
        scores = conn.zmscore(receipts_key(), [str(d.task_id) for d in batch])
        received = [
            d
            for d, score in zip(batch, scores, strict=True)
            if score is not None and d.dispatched_at is not None and score >= d.dispatched_at.timestamp()
        ]
        services.confirm_dispatches(received, epoch)
        lost = sorted((d for d in batch if d not in received), key=lambda d: -d.priority)
        for dispatch in lost:
            if dispatch.epoch:
                reason = f"the broker lost its message (its epoch {dispatch.epoch} is gone: Redis flushed or restarted)"
            elif dispatch.dispatched_at is None:
                reason = "never dispatched"
            elif services.redispatch_due(dispatch, now=now, base_seconds=base):
                reason = f"its publish at {dispatch.dispatched_at:%H:%M:%S}Z never reached the broker"
            else:
                continue
            redispatched += services.redispatch(dispatch, reason=reason)
    conn.zremrangebyscore(receipts_key(), "-inf", started - max(base, _MIN_RECEIPT_HORIZON))
    return redispatched
