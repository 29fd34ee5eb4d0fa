"""Operator statistics (``GET /api/persistence/stats``): counts, storage, mirror consistency.

Every figure is read from SQL, except the mirror consistency, which compares
each mirror entry with SQL (``reconcile_mirror(check_only=True)``, read-only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from persistence.backup import last_backup
from persistence.drills import last_drill, last_success, summary
from persistence.selectors import mirror_consistency
from tasks import selectors
from tasks.audit import HistoryEvent


def task_counts() -> dict[str, Any]:
    """Live (not deleted) tasks by state, role and provider, and the size of the trash."""
    by_state = selectors.count_by_state()
    deleted = selectors.count_in_trash()
    alive = sum(by_state.values())
    by = selectors.count_alive_by("provider", "role")
    return {
        "total": alive + deleted,
        "alive": alive,
        "deleted": deleted,
        "by_state": by_state,
        "by_role": by["role"],
        "by_provider": by["provider"],
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
    """Bytes used by the database and by its indexes (the goal: indexes under 20 % of it)."""
    sizes = {"sqlite": _sqlite_sizes, "postgresql": _postgresql_sizes}.get(connection.vendor)
    if sizes is None:
        return {"vendor": connection.vendor, "size_bytes": None, "index_bytes": None, "index_share": None}
    with connection.cursor() as cursor:
        size, indexes = sizes(cursor)
    share = round(indexes / size, 4) if indexes is not None and size else None
    return {"vendor": connection.vendor, "size_bytes": size, "index_bytes": indexes, "index_share": share}


def collect_stats() -> dict[str, Any]:
    now = timezone.now()
    deletions = selectors.count_events_since(now - timedelta(hours=1), HistoryEvent.SOFT_DELETE)
    return {
        "generated_at": now,
        "tasks": task_counts(),
        "history": {"total": selectors.count_history_rows()},
        "outputs": {"total": selectors.count_outputs()},
        "deletions_last_hour": deletions[HistoryEvent.SOFT_DELETE],
        "database": database_size(),
        "mirror": mirror_consistency(),
        "last_backup_at": last_backup(),
        "last_drill": summary(last_drill()),
        "last_drill_success_at": success.finished_at if (success := last_success()) else None,
        "last_recovery_at": selectors.last_recovery_at(),
    }
