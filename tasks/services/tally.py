"""The history tally: the count of each kind of history row under a mark, kept so that the counters derived from
history (/metrics) group the rows written since the mark, not the whole history at every scrape
(``selectors.count_history_by_kind``).

Every write of the tally locks its mark first (``locked_mark``), so its writers never interleave: beat's advance,
a purge's erase, an unarchive's reinstate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Max
from django.db.models.functions import Greatest
from django.utils import timezone

from tasks.models import HISTORY_KIND, HistoryTally, HistoryTallyMark, TaskHistory
from tasks.selectors import count_history_by_kind

# PostgreSQL: how long the advance waits for the transactions writing history rows to end before it gives up until
# its next run. While its SHARE request waits in the lock queue, every writer that comes after it waits too, so this
# bounds the stall a long transaction (a bulk change of thousands of tasks) could cause; a task's own change takes
# milliseconds.
ADVANCE_LOCK_TIMEOUT_MS = 200
# The most history ids one transaction of the advance counts (about 0.1 s of SQLite's write lock).
ADVANCE_CHUNK_IDS = 100_000


def locked_mark() -> HistoryTallyMark:
    """The tally's mark, its row locked until the end of the caller's transaction (created at 0 if missing)."""
    HistoryTallyMark.objects.bulk_create([HistoryTallyMark(pk=1)], ignore_conflicts=True)
    return HistoryTallyMark.objects.select_for_update().get(pk=1)


def advance_history_tally() -> int:
    """Add the history rows written since the mark to the tally and move the mark to the newest row; returns how
    many rows it added.

    By at most ADVANCE_CHUNK_IDS ids a transaction, so that writers wait for one chunk at a time, not for a first
    advance over a history of millions of rows (at a million tasks on SQLite, 3.7 s in one).
    """
    added = 0
    while True:
        chunk = _advance_chunk()
        if chunk is None:
            return added
        added += chunk


def _advance_chunk() -> int | None:
    """One transaction of the advance: the rows of ADVANCE_CHUNK_IDS ids from the first above the mark, or None
    when the mark is at the newest row.

    A row becomes the mark only once no transaction can still commit a row under it. On SQLite this transaction
    holds the database's write lock: no other writes. On PostgreSQL it takes the history table in SHARE mode, which
    waits for every transaction that has written a history row to end and holds back the next ones until it commits;
    their ids are drawn as they insert, after that lock.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{ADVANCE_LOCK_TIMEOUT_MS}ms'")
        mark = locked_mark()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(TaskHistory._meta.db_table)} IN SHARE MODE")
        # Two reads of one end of the primary key each: MIN and MAX in one statement read every row between.
        first = TaskHistory.objects.filter(pk__gt=mark.upto).order_by("pk").values_list("pk", flat=True).first()
        if first is None:
            return None
        newest = TaskHistory.objects.aggregate(newest=Max("pk"))["newest"]
        upto = min(newest, first - 1 + ADVANCE_CHUNK_IDS)  # a gap of ids (a purge's) is skipped
        rows = count_history_by_kind(above=mark.upto, upto=upto)
        add_to_tally(rows)
        HistoryTallyMark.objects.filter(pk=1).update(upto=upto, advanced_at=timezone.now())
        return sum(row["n"] for row in rows)


def add_to_tally(rows: Iterable[Mapping[str, Any]], *, sign: int = 1) -> None:
    """Add (``sign`` -1: take off) counts by kind (``count_history_by_kind``'s rows) to the tally; the caller holds
    the mark's lock. A count taken off never goes under zero."""
    for row in rows:
        kind = {name: row[name] for name in HISTORY_KIND}
        n = row["n"] * sign
        if not HistoryTally.objects.filter(**kind).update(count=Greatest(F("count") + n, 0)) and n > 0:
            HistoryTally.objects.create(**kind, count=n)
