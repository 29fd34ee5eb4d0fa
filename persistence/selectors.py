"""Reads of the mirror: a task's live state (Redis first, SQL on a miss or a Redis failure), and how far
the mirror agrees with SQL (a sample of the newest entries, or every entry)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_celery_results.models import TaskResult
from redis.exceptions import RedisError

from persistence import mirror
from persistence.services import expected_in_mirror, reconcile_mirror
from tasks.dispatch import EXECUTE_TASK
from tasks.exceptions import TaskNotFound
from tasks.ids import parse_task_id, task_id_of
from tasks.models import Task

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
        mirror.refresh(doc)
    return doc


def mirror_sample(limit: int) -> dict[str, Any]:
    """Compare the mirror entries of the ``limit`` newest tasks that should be mirrored with SQL.

    A sample, not a proof: ``manage.py reconcile --check`` walks every task.
    An entry newer than the SQL read (a write in flight) counts as consistent.
    """
    window_start = timezone.now() - timedelta(seconds=settings.MIRROR_TERMINAL_TTL)
    rows = list(
        Task.objects.filter(expected_in_mirror(window_start))
        .order_by("-created_at")[:limit]
        .values(*mirror.MIRRORED_FIELDS)
    )
    docs = [mirror.snapshot(values) for values in rows]
    result: dict[str, Any] = {"sampled": len(docs), "consistent": 0, "missing": 0, "stale": 0, "error": ""}
    if not docs:
        result["status"] = "empty"
        return result
    try:
        statuses = mirror.sync(mirror.client(), docs, write=False)
    except RedisError as exc:
        logger.warning("mirror sample failed: %s", exc)
        result.update(status="unreachable", error=str(exc))
        return result
    result["missing"] = statuses.count(mirror.MISSING)
    result["stale"] = statuses.count(mirror.STALE)
    result["consistent"] = len(statuses) - result["missing"] - result["stale"]
    result["percent"] = round(100 * result["consistent"] / len(statuses), 1)
    result["status"] = "ok" if result["consistent"] == len(statuses) else "drift"
    return result


def mirror_consistency() -> dict[str, Any]:
    """Share of the tasks that should be mirrored whose Redis entry matches SQL."""
    try:
        report = reconcile_mirror(check_only=True)
    except RedisError as exc:
        return {"available": False, "error": f"Redis unreachable: {type(exc).__name__}", "consistency": None}
    matching = report.checked - report.missing - report.stale
    return {
        "available": True,
        "checked": report.checked,
        "matching": matching,
        "missing": report.missing,
        "stale": report.stale,
        "orphan": report.orphan,
        "vanished": report.vanished,
        "consistency": round(matching / report.checked, 6) if report.checked else 1.0,
    }


def mirrored_task_ids() -> list[str]:
    """Ids of the tasks the Redis mirror holds (it mirrors committed tasks only): a witness for verify_audit.
    Empty when Redis does not answer: the mirror is disposable, its absence proves nothing."""
    try:
        return list(mirror.scan_task_ids(mirror.client()))
    except RedisError as exc:
        logger.warning("verify_audit: the Redis mirror could not be scanned: %s", exc)
        return []


def executed_task_ids() -> Iterator[str]:
    """Ids of the Crux tasks Celery has a result row for (only committed tasks are dispatched): a witness. A row
    is kept per publish, under the publish's Celery id (``tasks.ids.celery_id``), which names the task, for a
    delivery that failed, waited for a retry or ran nothing; a completion has none (``tasks.tasks.ResultBackend``
    reads it from the task), so a completed task removed whole is named by the checkpoint and the mirror."""
    results = TaskResult.objects.filter(task_name=EXECUTE_TASK).values_list("task_id", flat=True)
    return (task_id_of(celery_task_id) for celery_task_id in results.iterator(chunk_size=2000))
