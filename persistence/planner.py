"""SQLite's planner statistics for the task table: ANALYZE once it has grown or shrunk by a quarter since the last.

Without statistics SQLite's planner rates every index from fixed guesses. For a list filtered by owner, provider,
role and a date range it then finds the owner's index (owner, creation time) as good as the one on all four
columns, and takes the smaller: at a million tasks that page read about three times the rows it needed (1.0
against 0.3 ms). With ``sqlite_stat1`` it knows how many tasks an owner, a provider and a role each narrow to.

A housekeeping job (``crux.sqlite_statistics``, every ``SQLITE_STATISTICS_SECONDS``) counts the tasks and compares
the count with the one the statistics were taken at. ANALYZE runs under the write lock, as every write does
(``crux/db/base.py``): 1.2 s at a million tasks, once per quarter of growth. PostgreSQL's autovacuum keeps its own.
"""

from __future__ import annotations

from django.db import connection, transaction

from tasks.models import Task

# Statistics are taken again once the task count is this many times, or this fraction of, the one they hold.
STALE_FACTOR = 1.25
# Below this many tasks every plan reads few rows: no statistics are taken (an empty table's would mislead later).
FEWEST_TASKS = 1000


def analyzed_count() -> int | None:
    """The task count the planner's statistics hold, or None when it has none (or the engine is not SQLite)."""
    if connection.vendor != "sqlite":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        if cursor.fetchone() is None:
            return None
        cursor.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = %s LIMIT 1", [Task._meta.db_table])
        row = cursor.fetchone()
    return None if row is None else int(row[0].split()[0])


def refresh_statistics(*, force: bool = False) -> bool:
    """ANALYZE the task table on SQLite when its statistics are missing or stale (``force``: in any case, from
    FEWEST_TASKS on); whether it ran."""
    if connection.vendor != "sqlite":
        return False
    tasks = Task.objects.count()
    then = analyzed_count()
    if tasks < FEWEST_TASKS:
        return False
    if not force and then is not None and then / STALE_FACTOR < tasks < then * STALE_FACTOR:
        return False
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Task._meta.db_table)}")
    return True
