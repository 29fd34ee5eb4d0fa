"""Figures for the admin index: tasks by state, deletions, mirror consistency, activity per hour.

Every query here is bounded by an index (state, created_at, the history's
created_at, the partial index on deleted tasks) or by a sample, and the result
is cached for ``CACHE_SECONDS`` per process, so the index page stays cheap on a
large table and with Redis down.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone
from redis.exceptions import RedisError

from tasks.admin_lists import TTLCache
from tasks.audit import HistoryEvent
from tasks.models import Task, TaskHistory
from tasks.states import TERMINAL_STATES, TaskState
from tasks.timeline import state_colour

logger = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
MIRROR_SAMPLE_SIZE = 200
CHART_HOURS = 24

_cache = TTLCache(ttl=CACHE_SECONDS)


def clear_cache() -> None:
    _cache.clear()


def state_counts() -> list[dict[str, Any]]:
    counts = {row["state"]: row["n"] for row in Task.objects.order_by().values("state").annotate(n=Count("pk"))}
    total = sum(counts.values()) or 1
    return [
        {
            "state": state.value,
            "label": state.label,
            "count": counts.get(state.value, 0),
            "colour": state_colour(state.value),
            "percent": round(100 * counts.get(state.value, 0) / total, 2),
        }
        for state in TaskState
    ]


def deletions_since(since: datetime) -> dict[str, int]:
    recent = TaskHistory.objects.filter(created_at__gte=since)
    return {
        "deleted": recent.filter(event=HistoryEvent.SOFT_DELETE).count(),
        "restored": recent.filter(event=HistoryEvent.RESTORE).count(),
    }


def mirror_sample(limit: int = MIRROR_SAMPLE_SIZE) -> dict[str, Any]:
    """Compare the mirror entries of the ``limit`` newest tasks that should be mirrored with SQL.

    A sample, not a proof: ``manage.py reconcile --check`` walks every task.
    An entry newer than the SQL read (a write in flight) counts as consistent.
    """
    from persistence import mirror
    from persistence.services import expected_in_mirror

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
        logger.warning("dashboard mirror sample failed: %s", exc)
        result.update(status="unreachable", error=str(exc))
        return result
    result["missing"] = statuses.count(mirror.MISSING)
    result["stale"] = statuses.count(mirror.STALE)
    result["consistent"] = len(statuses) - result["missing"] - result["stale"]
    result["percent"] = round(100 * result["consistent"] / len(statuses), 1)
    result["status"] = "ok" if result["consistent"] == len(statuses) else "drift"
    return result


def activity(now: datetime, hours: int = CHART_HOURS) -> list[dict[str, Any]]:
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


def chart(buckets: list[dict[str, Any]], *, height: int = 110, bar: int = 8, gap: int = 6) -> dict[str, Any]:
    """Geometry of a small SVG bar chart (two bars per hour), drawn by the template: no JS, no CDN."""
    top = max([b["created"] for b in buckets] + [b["finished"] for b in buckets] + [1])
    step = 2 * bar + gap
    bars = []
    for i, b in enumerate(buckets):
        x = 30 + i * step
        hc = round(height * b["created"] / top, 1)
        hf = round(height * b["finished"] / top, 1)
        bars.append(
            {
                **b,
                "label": timezone.localtime(b["hour"]).strftime("%H:00"),
                "show_label": i % 3 == 0,
                "x_created": x,
                "x_finished": x + bar,
                "h_created": hc,
                "h_finished": hf,
                "y_created": round(10 + height - hc, 1),
                "y_finished": round(10 + height - hf, 1),
                "x_label": x + bar,
            }
        )
    return {
        "bars": bars,
        "bar": bar,
        "top": top,
        "width": 30 + len(buckets) * step + 10,
        "height": height + 40,
        "baseline": 10 + height,
        "label_y": 10 + height + 16,
        "total_created": sum(b["created"] for b in buckets),
        "total_finished": sum(b["finished"] for b in buckets),
    }


def _compute(now: datetime) -> dict[str, Any]:
    states = state_counts()
    return {
        "generated_at": now,
        "states": states,
        "total": sum(s["count"] for s in states),
        "in_trash": Task.objects.deleted().count(),
        "deletions": deletions_since(now - timedelta(hours=24)),
        "mirror": mirror_sample(),
        "chart": chart(activity(now)),
        "cache_seconds": int(CACHE_SECONDS),
    }


def dashboard(now: datetime | None = None) -> dict[str, Any]:
    """The index page's figures, computed at most once per ``CACHE_SECONDS`` per process."""
    if now is not None:
        return _compute(now)
    return _cache.get("dashboard", lambda: _compute(timezone.now()))
