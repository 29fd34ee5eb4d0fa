"""Operator statistics (seed 004 ``GET /api/persistence/stats``): counts, storage, mirror consistency.

Every figure is read from SQL, except the mirror consistency, which compares
each mirror entry with SQL (``reconcile_mirror(check_only=True)``, read-only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Count, Max
from django.utils import timezone
from redis.exceptions import RedisError

from persistence.backup import last_backup
from persistence.services import reconcile_mirror
from tasks.audit import Channel, HistoryEvent
from tasks.models import Task, TaskHistory, TaskOutput
from tasks.states import TaskState


def _counts(field: str) -> dict[str, int]:
    rows = Task.objects.alive().order_by().values(field).annotate(n=Count("pk"))
    return {row[field]: row["n"] for row in sorted(rows, key=lambda r: r[field])}


def task_counts() -> dict[str, Any]:
    """Live (not deleted) tasks by state, role and provider, and the size of the trash."""
    by_state = dict.fromkeys(TaskState.values, 0) | _counts("state")
    deleted = Task.objects.deleted().count()
    alive = sum(by_state.values())
    return {
        "total": alive + deleted,
        "alive": alive,
        "deleted": deleted,
        "by_state": by_state,
        "by_role": _counts("role"),
        "by_provider": _counts("provider"),
    }


def _sqlite_sizes(cursor: Any) -> tuple[int, int | None]:
    cursor.execute("PRAGMA page_count")
    pages = cursor.fetchone()[0]
    cursor.execute("PRAGMA page_size")
    size = pages * cursor.fetchone()[0]
    try:  # dbstat is a compile-time option of SQLite; without it the index share is unknown
        cursor.execute(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat "
            "WHERE name IN (SELECT name FROM sqlite_master WHERE type = 'index')"
        )
    except DatabaseError:
        return size, None
    return size, cursor.fetchone()[0]


def _postgresql_sizes(cursor: Any) -> tuple[int, int | None]:
    cursor.execute(
        "SELECT pg_database_size(current_database()), "
        "(SELECT COALESCE(SUM(pg_indexes_size(relid)), 0) FROM pg_stat_user_tables)"
    )
    size, indexes = cursor.fetchone()
    return int(size), int(indexes)


def database_size() -> dict[str, Any]:
    """Bytes used by the database and by its indexes (seed 004: index overhead < 20%)."""
    sizes = {"sqlite": _sqlite_sizes, "postgresql": _postgresql_sizes}.get(connection.vendor)
    if sizes is None:
        return {"vendor": connection.vendor, "size_bytes": None, "index_bytes": None, "index_share": None}
    with connection.cursor() as cursor:
        size, indexes = sizes(cursor)
    share = round(indexes / size, 4) if indexes is not None and size else None
    return {"vendor": connection.vendor, "size_bytes": size, "index_bytes": indexes, "index_share": share}


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
        "consistency": round(matching / report.checked, 6) if report.checked else 1.0,
    }


def collect_stats() -> dict[str, Any]:
    now = timezone.now()
    last_recovery = TaskHistory.objects.filter(channel=Channel.RECOVERY).aggregate(at=Max("created_at"))["at"]
    return {
        "generated_at": now,
        "tasks": task_counts(),
        "history": {"total": TaskHistory.objects.count()},
        "outputs": {"total": TaskOutput.objects.count()},
        "deletions_last_hour": TaskHistory.objects.filter(
            event=HistoryEvent.SOFT_DELETE, created_at__gte=now - timedelta(hours=1)
        ).count(),
        "database": database_size(),
        "mirror": mirror_consistency(),
        "last_backup_at": last_backup(),
        "last_recovery_at": last_recovery,
    }
