"""Counts of tasks and of their history: one function per figure, read by the stats, the dashboard and /metrics.

Every query is a GROUP BY or a COUNT on an indexed column (state, created_at,
the partial index on deleted tasks), on the history tally, or on the history
rows written since a moment, read from the first of them by id
(``history_since``: history ids grow with time, so no index on every row's time
is kept), or reads a capped sample through an index (the durations of the latest
completed tasks, the recovery sweep's history rows).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.db.models import Count, F, Min, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, TruncHour, TruncMinute

from tasks.audit import Channel, HistoryEvent
from tasks.models import HISTORY_KIND, HistoryTally, HistoryTallyMark, Task, TaskHistory, TaskOutput
from tasks.states import TERMINAL_STATES, TaskState


def count_by_state(*, include_deleted: bool = False) -> dict[str, int]:
    """Tasks in each state (every state listed, zeros included); the trash only if ``include_deleted``."""
    counts = dict.fromkeys(TaskState.values, 0)
    counts.update((state, n) for (state,), n in _counts_by(("state",), include_deleted=include_deleted).items())
    return counts


def count_alive_by(*fields: str) -> dict[str, dict[str, int]]:
    """Tasks not deleted, by the values of each of ``fields`` (provider, role), each in value order.

    One count over the fields together, read once: for ``("provider", "role")`` SQLite reads the index that leads
    with both (127 ms at a million tasks), where a count by role alone, with no index in its order, took 285 ms and
    one by provider 76."""
    counts: dict[str, Counter[str]] = {field: Counter() for field in fields}
    for values, n in _counts_by(fields, include_deleted=False).items():
        for field, value in zip(fields, values, strict=True):
            counts[field][value] += n
    return {field: dict(sorted(by_value.items())) for field, by_value in counts.items()}


def _counts_by(fields: tuple[str, ...], *, include_deleted: bool) -> dict[tuple[Any, ...], int]:
    """Tasks by the values of ``fields`` together: every task counted with ``COUNT(*)``, which SQLite reads from an
    index that holds the fields (a count of the id reads every row: 1.2 s, not 0.1, at a million tasks), less, unless
    ``include_deleted``, the trash's, read through the partial index on deleted tasks (a filter on the live ones
    would read every row too). Two statements: a task deleted, restored or purged in between counts as it was or
    as it is, never below zero. Values no task holds are left out."""
    grouped = Task.objects.order_by().values_list(*fields).annotate(n=Count("*"))
    counts: Counter[tuple[Any, ...]] = Counter({tuple(row[:-1]): row[-1] for row in grouped})
    if not include_deleted:
        counts.subtract(Task.objects.deleted().order_by().values_list(*fields))
    return {values: n for values, n in counts.items() if n > 0}


def count_in_trash() -> int:
    return Task.objects.deleted().count()


def count_history_rows() -> int:
    """Every history row: the sum of the counts by kind (``count_history_by_kind``: the tally and the rows above its
    mark), not a count of the whole table, which reads every row (at a million tasks, 44 ms on SQLite, a second with
    the pages cold, and 0.2 s on PostgreSQL)."""
    return sum(row["n"] for row in count_history_by_kind())


def count_outputs() -> int:
    return TaskOutput.objects.count()


# A history row's time is taken just before its INSERT, its id at the INSERT: a row can carry an earlier time than a
# row with a smaller id by at most the length of the transaction that wrote it (and the clock skew between hosts).
# The first id of a moment is looked for this much earlier; the rows are then filtered by their time exactly.
HISTORY_ID_SLACK = timedelta(minutes=5)


def first_history_id_since(moment: datetime) -> int:
    """The smallest history id of a row written at or after ``moment`` (one past the last if none), as if ids and
    times grew together: a binary search over the primary key, a few dozen index probes whatever the table's size."""
    ids = TaskHistory.objects.order_by("pk")
    low = ids.values_list("pk", flat=True).first()
    last = TaskHistory.objects.order_by("-pk").values_list("pk", flat=True).first()
    if low is None or last is None:
        return 1
    high = last + 1  # invariant: every row below ``low`` is older; the first row from ``high`` on is not
    while low < high:
        middle = (low + high) // 2
        probe = ids.filter(pk__gte=middle).values_list("pk", "created_at").first()
        if probe is None or probe[1] >= moment:
            high = middle
        else:
            low = probe[0] + 1
    return low


def history_since(since: datetime) -> QuerySet[TaskHistory]:
    """The history rows written since ``since``: read from the first id that can hold one (``HISTORY_ID_SLACK``
    earlier), filtered by time exactly."""
    return TaskHistory.objects.filter(pk__gte=first_history_id_since(since - HISTORY_ID_SLACK), created_at__gte=since)


def count_events_since(since: datetime, *events: str) -> dict[str, int]:
    """History rows of each of ``events`` (soft deletes, restores...) written since ``since``, counted in one pass
    over that window (zeros included)."""
    rows = history_since(since).filter(event__in=events).order_by().values("event").annotate(n=Count("pk"))
    return {**dict.fromkeys(events, 0), **{row["event"]: row["n"] for row in rows}}


def last_recovery_at() -> datetime | None:
    """When the recovery channel last changed a task: the newest time of its rows, read from the partial index that
    holds those rows alone (``history_recovery_created``). Read backwards through the history by id, a database
    without any took 0.3 to 1.4 s at a million tasks to say so."""
    newest = TaskHistory.objects.filter(channel=Channel.RECOVERY).order_by("-created_at")
    return newest.values_list("created_at", flat=True).first()


def count_history_by_kind(
    task_ids: Collection[UUID] | None = None, *, above: int | None = None, upto: int | None = None
) -> list[Mapping[str, Any]]:
    """History rows grouped by kind (``HISTORY_KIND``: event, state_from, state_to, channel), each with its count
    ``n``: of every task, or of ``task_ids`` only (what a purge is about to remove); with ``above`` and ``upto``, only
    the rows whose id is greater than the one and at most the other.

    Every task's: the tally's counts (``HistoryTally``) and the rows above its mark grouped, read in one statement
    (one snapshot: a move of the mark between two reads would count rows twice or not at all), so a scrape reads the
    rows written since the last advance, not the whole history."""
    if task_ids is None and above is None and upto is None:
        marks = HistoryTallyMark.objects.filter(pk=1).values("upto")
        # The mark as read in the statement is the one the tally goes with; the mark read before it is what lets
        # PostgreSQL's planner expect few rows above it (for an unknown bound it plans a third of the table).
        newer = TaskHistory.objects.filter(pk__gt=marks.values_list("upto", flat=True).first() or 0)
        tallied = HistoryTally.objects.order_by().values(*HISTORY_KIND).annotate(n=F("count"))
        rows = tallied.union(_history_by_kind(newer.filter(pk__gt=Coalesce(Subquery(marks), 0))), all=True)
        counts: Counter[tuple[str, ...]] = Counter()
        for row in rows:
            counts[tuple(row[name] for name in HISTORY_KIND)] += row["n"]
        return [{**dict(zip(HISTORY_KIND, kind, strict=True)), "n": n} for kind, n in counts.items() if n]
    history = TaskHistory.objects.all() if task_ids is None else TaskHistory.objects.filter(task_id__in=task_ids)
    if above is not None:
        history = history.filter(pk__gt=above)
    if upto is not None:
        history = history.filter(pk__lte=upto)
    return list(_history_by_kind(history))


def _history_by_kind(history: QuerySet[TaskHistory]) -> QuerySet[TaskHistory, dict[str, Any]]:
    return history.order_by().values(*HISTORY_KIND).annotate(n=Count("pk"))


def activity_per_hour(now: datetime, hours: int) -> list[dict[str, Any]]:
    """Tasks created and finished (completed, failed, cancelled) per hour, oldest hour first: hours of UTC, which
    every time zone's hours are not (a zone half an hour off would find no count of its own hours)."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    created = {
        row["hour"]: row["n"]
        for row in Task.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("*"))  # from the index on created_at alone, as ``_counts_by`` counts
        .order_by("hour")
    }
    finished = {
        row["hour"]: row["n"]
        for row in _finished_since(start)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by("hour")
    }
    return [
        {"hour": hour, "created": created.get(hour, 0), "finished": finished.get(hour, 0)}
        for hour in (start + timedelta(hours=i) for i in range(hours))
    ]


def _finished_since(start: datetime) -> QuerySet[TaskHistory]:
    """The history rows of tasks finishing (completed, failed, cancelled) since ``start``."""
    return history_since(start).filter(event=HistoryEvent.TRANSITION, state_to__in=sorted(TERMINAL_STATES))


def finished_per_minute(now: datetime, minutes: int) -> list[dict[str, Any]]:
    """Tasks finished (completed, failed, cancelled) in each of the last ``minutes`` minutes, the current one last
    (it is still filling)."""
    current = now.replace(second=0, microsecond=0)
    start = current - timedelta(minutes=minutes - 1)
    counts = {
        row["minute"]: row["n"]
        for row in _finished_since(start)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("pk"))
        .order_by("minute")
    }
    return [
        {"minute": minute, "finished": counts.get(minute, 0)}
        for minute in (start + timedelta(minutes=i) for i in range(minutes))
    ]


@dataclass(frozen=True)
class QueueDepth:
    """Queued tasks of one queue in SQL: published and waiting for a worker, or waiting for their start time (not
    published yet); when the longest-waiting published one was published (None if none is)."""

    queue: str
    waiting: int
    scheduled: int
    oldest_published_at: datetime | None


def queue_depths() -> list[QueueDepth]:
    """Queued tasks per queue ('' is the default queue), read through the state index."""
    rows = (
        Task.objects.filter(state=TaskState.QUEUED)
        .order_by()
        .values("queue")
        .annotate(
            waiting=Count("pk", filter=Q(dispatched_at__isnull=False)),
            scheduled=Count("pk", filter=Q(dispatched_at__isnull=True)),
            oldest=Min("dispatched_at"),
        )
    )
    return [QueueDepth(row["queue"], row["waiting"], row["scheduled"], row["oldest"]) for row in rows]


def duration_percentiles(sample: int, percentiles: tuple[int, ...] = (50, 95, 99)) -> dict[str, Any]:
    """Run-time percentiles (seconds, nearest rank) of the ``sample`` latest completed tasks (latest by creation:
    the state index's order), each from its last attempt's start to its completion; ``count`` is the sample's size."""
    rows = (
        Task.objects.filter(state=TaskState.COMPLETED, started_at__isnull=False, completed_at__isnull=False)
        .order_by("-created_at")
        .values_list("started_at", "completed_at")[:sample]
    )
    durations = sorted((completed - started).total_seconds() for started, completed in rows if started and completed)
    return {
        "count": len(durations),
        **{
            f"p{p}": durations[max(0, math.ceil(p / 100 * len(durations)) - 1)] if durations else None
            for p in percentiles
        },
    }
