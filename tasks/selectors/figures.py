"""Counts of tasks and of their history: one function per figure, read by the stats, the dashboard and /metrics.

Every query is a GROUP BY or a COUNT on an indexed column (state, created_at,
the history's created_at, the partial index on deleted tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max
from django.db.models.functions import TruncHour

from tasks.audit import Channel, HistoryEvent
from tasks.models import Task, TaskHistory, TaskOutput
from tasks.states import TERMINAL_STATES, TaskState


def count_by_state(*, include_deleted: bool = False) -> dict[str, int]:
    """Tasks in each state (every state listed, zeros included); the trash only if ``include_deleted``."""
    tasks = Task.objects.all() if include_deleted else Task.objects.alive()
    counts = dict.fromkeys(TaskState.values, 0)
    for row in tasks.order_by().values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def count_alive_by(field: str) -> dict[str, int]:
    """Tasks not deleted, by the values of ``field`` (role, provider), in value order."""
    rows = Task.objects.alive().order_by().values(field).annotate(n=Count("pk"))
    return {row[field]: row["n"] for row in sorted(rows, key=lambda r: r[field])}


def count_in_trash() -> int:
    return Task.objects.deleted().count()


def count_history_rows() -> int:
    return TaskHistory.objects.count()


def count_outputs() -> int:
    return TaskOutput.objects.count()


def count_events_since(event: str, since: datetime) -> int:
    """History rows of ``event`` (soft deletes, restores...) written since ``since``."""
    return TaskHistory.objects.filter(event=event, created_at__gte=since).count()


def last_recovery_at() -> datetime | None:
    """When the recovery channel last changed a task."""
    return TaskHistory.objects.filter(channel=Channel.RECOVERY).aggregate(at=Max("created_at"))["at"]


def count_history_by_kind() -> list[Mapping[str, Any]]:
    """History rows grouped by (event, state_from, state_to, channel), each with its count ``n``."""
    rows = TaskHistory.objects.order_by().values("event", "state_from", "state_to", "channel")
    return list(rows.annotate(n=Count("pk")))


def activity_per_hour(now: datetime, hours: int) -> list[dict[str, Any]]:
    """Tasks created and finished (completed, failed, cancelled) per hour, oldest hour first."""
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    created = {
        row["hour"]: row["n"]
        for row in Task.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by("hour")
    }
    finished = {
        row["hour"]: row["n"]
        for row in TaskHistory.objects.filter(
            created_at__gte=start, event=HistoryEvent.TRANSITION, state_to__in=sorted(TERMINAL_STATES)
        )
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by("hour")
    }
    return [
        {"hour": hour, "created": created.get(hour, 0), "finished": finished.get(hour, 0)}
        for hour in (start + timedelta(hours=i) for i in range(hours))
    ]
