"""A task's life as a picture: the states it went through, how long each lasted, who moved it and why.

Built from its history rows alone (the audit trail is the record), so the
timeline of a task shows exactly what ``verify_audit`` vouches for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from tasks.audit import HistoryEvent
from tasks.models import Task, TaskHistory
from tasks.selectors import latest_history
from tasks.states import TaskState, is_terminal

# A task with a longer history shows its latest rows (the timeline says so).
MAX_TIMELINE_ROWS = 1000

STATE_COLOURS: dict[str, str] = {
    TaskState.PENDING: "#6c757d",
    TaskState.QUEUED: "#0d6efd",
    TaskState.RUNNING: "#0b8fa8",
    TaskState.COMPLETED: "#198754",
    TaskState.FAILED: "#dc3545",
    TaskState.CANCELLED: "#5c636a",
    TaskState.INTERRUPTED: "#e8590c",
}
EVENT_COLOURS: dict[str, str] = {
    HistoryEvent.SOFT_DELETE: "#b02a37",
    HistoryEvent.RESTORE: "#146c43",
    HistoryEvent.EDIT: "#6f42c1",
}


def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, "#6c757d")


def format_duration(delta: timedelta | None) -> str:
    """Short human duration: 450 ms, 3.2 s, 4 min 05 s, 2 h 07 min, 3 d 4 h."""
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass
class Segment:
    """A stretch of time in one state, on the proportional bar."""

    state: str
    start: datetime
    end: datetime
    ongoing: bool
    entered_by: str
    reason: str
    left: float = 0.0  # percent of the bar
    width: float = 0.0

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def duration_label(self) -> str:
        return format_duration(self.duration) + (" so far" if self.ongoing else "")

    @property
    def colour(self) -> str:
        return state_colour(self.state)


@dataclass
class Band:
    """A stretch of time in the trash (soft delete to restore, or to now)."""

    start: datetime
    end: datetime
    ongoing: bool
    left: float = 0.0
    width: float = 0.0

    @property
    def duration_label(self) -> str:
        return format_duration(self.end - self.start) + (" so far" if self.ongoing else "")


@dataclass
class Event:
    """One history row on the vertical timeline, with the time since the previous one."""

    row: TaskHistory
    since_previous: timedelta | None
    state_changed: bool
    changes: list[str] = field(default_factory=list)

    @property
    def colour(self) -> str:
        return EVENT_COLOURS.get(self.row.event) or state_colour(self.row.state_to)

    @property
    def gap_label(self) -> str:
        return format_duration(self.since_previous)

    @property
    def gap_height(self) -> int:
        """Pixel height of the connector above this event: grows with the log of the wait."""
        if self.since_previous is None:
            return 0
        seconds = max(self.since_previous.total_seconds(), 0.0)
        steps = [1, 10, 60, 600, 3600, 6 * 3600, 86400]
        return 14 + 10 * sum(1 for s in steps if seconds >= s)


@dataclass
class Timeline:
    task: Task
    events: list[Event]
    segments: list[Segment]
    bands: list[Band]
    start: datetime | None
    end: datetime | None
    total_rows: int
    truncated: bool

    @property
    def ongoing(self) -> bool:
        return bool(self.segments and self.segments[-1].ongoing) or any(band.ongoing for band in self.bands)

    @property
    def total_label(self) -> str:
        if self.start is None or self.end is None:
            return ""
        return format_duration(self.end - self.start)

    @property
    def time_in_state(self) -> list[tuple[str, str, str]]:
        """(state, colour, total duration) for each state the task has been in, in first-seen order."""
        totals: dict[str, timedelta] = {}
        for seg in self.segments:
            totals[seg.state] = totals.get(seg.state, timedelta()) + seg.duration
        return [(state, state_colour(state), format_duration(total)) for state, total in totals.items()]


def _place(items: list[Any], start: datetime, end: datetime) -> None:
    span = max((end - start).total_seconds(), 1e-6)
    for item in items:
        item.left = round(100 * (item.start - start).total_seconds() / span, 3)
        item.width = round(100 * (item.end - item.start).total_seconds() / span, 3)


def build_timeline(task: Task, *, now: datetime | None = None, limit: int = MAX_TIMELINE_ROWS) -> Timeline:
    now = now or timezone.now()
    rows, total = latest_history(task, limit)

    events: list[Event] = []
    segments: list[Segment] = []
    bands: list[Band] = []
    previous: TaskHistory | None = None
    for row in rows:
        since = None if previous is None else row.created_at - previous.created_at
        changed = not segments or row.state_to != segments[-1].state
        raw_changes = (row.details or {}).get("changes", {}) if isinstance(row.details, dict) else {}
        events.append(Event(row=row, since_previous=since, state_changed=changed, changes=sorted(raw_changes)))
        if changed:
            if segments:
                segments[-1].end = row.created_at
            segments.append(
                Segment(
                    state=row.state_to,
                    start=row.created_at,
                    end=row.created_at,
                    ongoing=False,
                    entered_by=row.actor,
                    reason=row.reason,
                )
            )
        if row.event == HistoryEvent.SOFT_DELETE:
            bands.append(Band(start=row.created_at, end=row.created_at, ongoing=True))
        elif row.event == HistoryEvent.RESTORE and bands and bands[-1].ongoing:
            bands[-1].end, bands[-1].ongoing = row.created_at, False
        previous = row

    start = rows[0].created_at if rows else None
    end = rows[-1].created_at if rows else None
    if segments and not is_terminal(segments[-1].state):
        segments[-1].end, segments[-1].ongoing = now, True
        end = now
    for band in bands:
        if band.ongoing:
            band.end = now
            end = now
    if start is not None and end is not None:
        _place(segments, start, end)
        _place(bands, start, end)
    return Timeline(
        task=task,
        events=events,
        segments=segments,
        bands=bands,
        start=start,
        end=end,
        total_rows=total,
        truncated=total > len(rows),
    )
