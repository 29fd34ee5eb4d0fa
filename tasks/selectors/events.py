"""The event source of a task (or of many): its history rows and outputs after a cursor, in order, and its progress.

A cursor covers both tables: ``"<last history id>-<last output id>"``. Each durable event (a history row, an
output) carries the cursor after it, so a reader that resumes from the last cursor it saw gets no gap and no
duplicate. Progress and phase are telemetry on the task row (no history): they are read as a snapshot, never
resumed.

Ids come from each table's autoincrement. Writes of one task hold its row lock (``services.locked_task``,
the attempt's claim), so one task's rows commit in id order. Across tasks, PostgreSQL can commit a lower id
after a higher one: ``Frontier`` holds back rows after a hole for a grace period (a rolled-back insert
leaves a permanent hole, so it then moves on). SQLite commits one writer at a time, in id order.
"""

from __future__ import annotations

import heapq
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from tasks.exceptions import InvalidTaskData
from tasks.models import Task, TaskHistory, TaskOutput, TaskQuerySet
from tasks.selectors.history import with_previous_links
from tasks.states import is_terminal

# A durable event: a history row or an output.
Row: TypeAlias = TaskHistory | TaskOutput

_CURSOR = re.compile(r"(\d{1,18})-(\d{1,18})")


@dataclass(frozen=True, order=True)
class Cursor:
    """The last history id and the last output id a reader has seen (0: none)."""

    history: int = 0
    output: int = 0

    def __str__(self) -> str:
        return f"{self.history}-{self.output}"

    @classmethod
    def parse(cls, text: str | None, *, field: str = "last_event_id") -> Cursor:
        """``"<history id>-<output id>"`` as a stream sent it in ``id:``; None (not given) is the start."""
        if text is None:
            return cls()
        found = _CURSOR.fullmatch(text.strip())
        if found is None:
            raise InvalidTaskData({field: [f"{text[:60]!r} is not an event id: expected <history id>-<output id>."]})
        return cls(int(found.group(1)), int(found.group(2)))

    def after(self, row: Row) -> Cursor:
        """The cursor once ``row`` has been read (ids only move forward)."""
        if isinstance(row, TaskHistory):
            return Cursor(max(self.history, row.pk), self.output)
        return Cursor(self.history, max(self.output, row.pk))

    def covers(self, row: Row) -> bool:
        """Whether ``row`` was read already (at or before this cursor)."""
        return row.pk <= (self.history if isinstance(row, TaskHistory) else self.output)


def in_order(history: Iterable[TaskHistory], outputs: Iterable[TaskOutput]) -> list[Row]:
    """Both tables' rows (each in id order) as one sequence in time order; each table keeps its id order."""
    merged: Iterable[Row] = heapq.merge(history, outputs, key=_when)
    return list(merged)


def _when(row: Row) -> tuple[datetime, bool]:
    """Time order; a history row before an output of the same instant."""
    return row.created_at, isinstance(row, TaskOutput)


def events_after(
    tasks: TaskQuerySet | Iterable[uuid.UUID], cursor: Cursor, upto: Cursor | None = None, *, limit: int = 1000
) -> tuple[list[Row], bool]:
    """The history rows and outputs of ``tasks`` after ``cursor`` (and at most ``upto``), in order, at most
    ``limit`` of each table; and whether that was all (else read on from the cursor after the last row)."""
    history = TaskHistory.objects.filter(pk__gt=cursor.history)
    outputs = TaskOutput.objects.filter(pk__gt=cursor.output)
    if isinstance(tasks, TaskQuerySet):
        task_ids = tasks.order_by().values("pk")
        history, outputs = history.filter(task_id__in=task_ids), outputs.filter(task_id__in=task_ids)
    else:
        ids = list(tasks)
        history, outputs = history.filter(task_id__in=ids), outputs.filter(task_id__in=ids)
    if upto is not None:
        history, outputs = history.filter(pk__lte=upto.history), outputs.filter(pk__lte=upto.output)
    history_rows = list(with_previous_links(history.order_by("pk"))[:limit])
    output_rows = list(outputs.order_by("pk")[:limit])
    rows = in_order(history_rows, output_rows)
    # A table cut at the limit may have more rows: only what comes before its last row is in order for sure.
    cut_at = [_when(table[-1]) for table in (history_rows, output_rows) if len(table) == limit]
    if not cut_at:
        return rows, True
    return [row for row in rows if _when(row) <= min(cut_at)], False


def rows_with_ids(history_ids: list[int], output_ids: list[int]) -> list[Row]:
    """The rows of these ids, in order (what the stream hub fetches once it knows which ids are followed)."""
    history = with_previous_links(TaskHistory.objects.filter(pk__in=history_ids).order_by("pk")) if history_ids else []
    outputs = TaskOutput.objects.filter(pk__in=output_ids).order_by("pk") if output_ids else []
    return in_order(history, outputs)


def newest_cursor() -> Cursor:
    """The cursor after every row committed now: where a reader that wants only what comes next starts."""
    last_history = TaskHistory.objects.order_by("-pk").values_list("pk", flat=True).first()
    last_output = TaskOutput.objects.order_by("-pk").values_list("pk", flat=True).first()
    return Cursor(last_history or 0, last_output or 0)


def new_ids(model: type[Row], after: int, limit: int = 2000) -> list[tuple[int, uuid.UUID]]:
    """(id, task id) of ``model``'s rows after ``after``, in id order: an index range on the primary key."""
    rows = model.objects.filter(pk__gt=after).order_by("pk").values_list("pk", "task_id")[:limit]
    return list(rows)


@dataclass(frozen=True)
class Progress:
    """A task's live figures (not history): state, progress 0..1 and phase."""

    task_id: uuid.UUID
    state: str
    progress: float
    phase: str
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return is_terminal(self.state)

    def same_figures(self, other: Progress | None) -> bool:
        return other is not None and (other.progress, other.phase) == (self.progress, self.phase)


def progress_of(task_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Progress]:
    """The live figures of these tasks, by id (tasks that no longer exist are left out)."""
    rows = Task.objects.filter(pk__in=list(task_ids)).values_list(
        "pk", "state", "progress", "current_phase", "updated_at"
    )
    return {pk: Progress(pk, state, progress, phase, updated) for pk, state, progress, phase, updated in rows}


class Frontier:
    """How far one table's ids have been read with no row left behind, across every task.

    Rows arrive in id order; a missing id (a hole) may be a transaction that has not committed yet. Rows
    after a hole are held back until it fills, or for ``grace`` seconds at most (a rolled-back insert never
    fills it). ``high`` is the id up to which every row was taken or given up.
    """

    def __init__(self, high: int, grace: float) -> None:
        self.high = high
        self.grace = grace
        self._hole_since: float | None = None

    def take(self, ids: list[int], now: float) -> list[int]:
        """The ids of ``ids`` (new, ascending) that may be read now; ``high`` moves past them."""
        taken: list[int] = []
        for pk in ids:
            if pk != self.high + 1:
                if self._hole_since is None:
                    self._hole_since = now
                if now - self._hole_since < self.grace:
                    break
            self._hole_since = None
            taken.append(pk)
            self.high = pk
        return taken
