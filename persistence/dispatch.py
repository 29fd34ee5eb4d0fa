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

A third record is kombu's own: the **reservations** (its ``unacked`` hash and
``unacked_index``), the messages workers took from a queue and have not
acknowledged. A worker killed outright leaves its reservations there until the
visibility timeout (12 h) gives them back; one for a running task is the
lease's to heal, but one for a task the worker never started (it waited in the
worker's prefetch) would hold that task queued all that time. A reservation
older than a lease whose task is still queued from that very publish is
therefore known lost too: the task is published again and the reservation
dropped. (A worker alive but holding a message that long, only possible with a
prefetch multiplier above 1, then runs whichever copy it claims first; the
claim keeps the other from running.)

A broker that is not Redis has no epoch: the conservative age rule
(``services.redispatch_stale``) applies there; RabbitMQ gives a lost
consumer's messages back by itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from functools import lru_cache
from typing import Any, cast

from django.conf import settings
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError

from tasks import services
from tasks.dispatch import EXECUTE_TASK, published

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


def reservation_keys() -> tuple[str, str]:
    """Kombu's records of reserved messages on a Redis broker: the index (delivery tag -> when taken) and the
    hash (delivery tag -> message)."""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    return options.get("unacked_index_key", "unacked_index"), options.get("unacked_key", "unacked")


def reserved_messages(conn: Redis, *, before: float) -> dict[bytes, str]:
    """The task messages (``crux.execute_task``) that workers took before ``before`` (a Unix time) and have not
    acknowledged: delivery tag -> Celery task id."""
    index, hash_key = reservation_keys()
    tags: list[bytes] = cast(list[bytes], conn.zrangebyscore(index, "-inf", before))
    if not tags:
        return {}
    reserved: dict[bytes, str] = {}
    for tag, raw in zip(tags, conn.hmget(hash_key, tags), strict=True):
        if raw is None:  # acknowledged meanwhile
            continue
        headers = json.loads(raw)[0].get("headers") or {}
        if headers.get("task") == EXECUTE_TASK and isinstance(headers.get("id"), str):
            reserved[tag] = headers["id"]
    return reserved


def drop_reservation(conn: Redis, tag: bytes) -> None:
    """Remove a reservation from kombu's records, as an acknowledgement would (the worker that took it is gone)."""
    index, hash_key = reservation_keys()
    pipe = conn.pipeline()
    pipe.zrem(index, tag)
    pipe.hdel(hash_key, tag)
    pipe.execute()


def redispatch_abandoned(conn: Redis) -> int:
    """Publish again the queued tasks whose current message a worker took more than a lease ago and never
    started; returns how many. The new publish is committed before the old reservation is dropped, so a crash
    in between leaves a stale reservation (of an older publish, ignored), never a task without a message."""
    lease = settings.TASK_LEASE_SECONDS
    reserved = reserved_messages(conn, before=time.time() - lease)
    current = services.current_dispatches(set(reserved.values())) if reserved else {}
    redispatched = 0
    for tag, celery_task_id in reserved.items():
        dispatch = current.get(celery_task_id)
        if dispatch is None:
            continue
        reason = f"a worker took its message {celery_task_id} over {lease:g}s ago and never started it (worker lost)"
        if services.redispatch(dispatch, reason=reason):
            redispatched += 1
            drop_reservation(conn, tag)
    return redispatched


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
    return redispatched + redispatch_abandoned(conn)
