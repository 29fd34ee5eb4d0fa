"""Reads of live task state: Redis first, SQL on a miss or a Redis failure."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from persistence import mirror
from tasks.exceptions import TaskNotFound
from tasks.models import Task
from tasks.services import parse_task_id

logger = logging.getLogger(__name__)


def task_status(task_id: Any) -> dict[str, Any]:
    """The mirror document of a task; re-populates the mirror from SQL on a miss."""
    pk = parse_task_id(task_id)
    try:
        doc = mirror.fetch(pk)
    except RedisError as exc:
        mirror.MIRROR_FAILURES.labels("read").inc()
        logger.warning("mirror read of task %s failed, serving from SQL: %s", pk, exc)
        doc = None
        redis_down = True
    else:
        redis_down = False
    if doc is not None:
        mirror.MIRROR_READS.labels("redis").inc()
        return doc
    values = Task.objects.filter(pk=pk).values(*mirror.MIRRORED_FIELDS).first()
    if values is None:
        raise TaskNotFound(pk)
    doc = mirror.snapshot(values)
    mirror.MIRROR_READS.labels("sql").inc()
    if not redis_down:
        mirror.publish(doc)
    return doc
