"""SQLite's upkeep for reads: the planner's statistics of the task table, and the search index's segments merged.

**Planner statistics:** ANALYZE once the task table has grown or shrunk by a quarter since the last.

Without statistics SQLite's planner rates every index from fixed guesses. For a list filtered by owner, provider,
role and a date range it then finds the owner's index (owner, creation time) as good as the one on all four
columns, and takes the smaller: at a million tasks that page read about three times the rows it needed (1.0
against 0.3 ms). With ``sqlite_stat1`` it knows how many tasks an owner, a provider and a role each narrow to.

A housekeeping job (``crux.sqlite_statistics``, every ``SQLITE_STATISTICS_SECONDS``) counts the tasks and compares
the count with the one the statistics were taken at. ANALYZE runs under the write lock, as every write does
(``crux/db/base.py``): 1.2 s at a million tasks, once per quarter of growth. PostgreSQL's autovacuum keeps its own.

**The search index's segments:** every transaction that inserts a task writes the FTS5 search index's new entries
as a segment of their own. FTS5's automerge keeps them to a few per level, but a search reads every segment: with
200,000 tasks inserted one at a time the index held 6 to 10, and a three-word search's candidates took 3.1 ms,
against 1.8 ms once they were merged into one. A second job (``crux.search_index_merge``, every
``SQLITE_SEARCH_MERGE_SECONDS``) merges them into one, rewriting the whole index in steps of SEARCH_MERGE_PAGES
pages, each a transaction of its own under the write lock: at a million tasks 52 steps of 66 ms (130 at most),
3.5 s in all. PostgreSQL's GIN indexes are merged by autovacuum.
"""

from __future__ import annotations

from django.db import connection, transaction

from tasks.db_triggers import SEARCH_TABLE
from tasks.models import Task

# Statistics are taken again once the task count is this many times, or this fraction of, the one they hold.
STALE_FACTOR = 1.25
# Below this many tasks every plan reads few rows: no statistics are taken (an empty table's would mislead later).
FEWEST_TASKS = 1000
# FTS5 pages (about 4 kB each) a step of the search index's merge writes at most.
SEARCH_MERGE_PAGES = 200


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


def search_segments() -> int:
    """How many segments SQLite's search index holds (0 on PostgreSQL): a search reads each."""
    if connection.vendor != "sqlite":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(DISTINCT segid) FROM {connection.ops.quote_name(SEARCH_TABLE + '_idx')}")
        return cursor.fetchone()[0]


def merge_search_index() -> int:
    """Merge SQLite's search index into one segment when it holds more, SEARCH_MERGE_PAGES pages a transaction;
    how many steps merged something (0: nothing to merge, or PostgreSQL).

    FTS5's ``'merge'`` command with a negative page count merges every segment, whatever its level; it has done
    all there is to do when a step changes fewer than two rows (SQLite's ``total_changes``). Tasks inserted
    meanwhile add segments of their own, so the steps are bounded: twice the index's pages over a step's."""
    if search_segments() <= 1:
        return 0
    table = connection.ops.quote_name(SEARCH_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(SEARCH_TABLE + '_data')}")
        most = 2 * cursor.fetchone()[0] // SEARCH_MERGE_PAGES + 2
    steps = 0
    while steps < most:
        with transaction.atomic(), connection.cursor() as cursor:
            before = connection.connection.total_changes
            cursor.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('merge', %s)", [-SEARCH_MERGE_PAGES])
            merged = connection.connection.total_changes - before >= 2
        if not merged:
            break
        steps += 1
    return steps
