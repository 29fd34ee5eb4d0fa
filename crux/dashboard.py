"""Figures for the admin index: tasks by state, queues, throughput, run times, workers, deletions, mirror
consistency, activity per hour; and the view that serves them alone, for the index to refresh them in place (htmx,
every ``REFRESH``).

Every query here is bounded by an index (state, created_at, the history's
created_at, the partial index on deleted tasks, the worker registry's heartbeat)
or by a sample. The live figures are cached for ``CACHE_SECONDS`` per process, short
enough that a staff user sees their own actions at the next refresh; the mirror
sample (200 Redis reads, not a figure of anyone's actions) for ``MIRROR_CACHE_SECONDS``,
so the page stays cheap with Redis slow or down.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from persistence.drills import last_drill, summary
from persistence.selectors import mirror_sample
from tasks import selectors, services
from tasks.admin.lists import TTLCache
from tasks.admin.timeline import format_duration, state_colour
from tasks.audit import HistoryEvent
from tasks.states import TaskState

CACHE_SECONDS = 2.0
MIRROR_CACHE_SECONDS = 30.0
REFRESH = "3s"
MIRROR_SAMPLE_SIZE = 200
CHART_HOURS = 24
THROUGHPUT_MINUTES = 5
DURATION_SAMPLE = 500

_cache = TTLCache(ttl=CACHE_SECONDS)
_mirror_cache = TTLCache(ttl=MIRROR_CACHE_SECONDS)


def clear_cache() -> None:
    _cache.clear()
    _mirror_cache.clear()


def state_counts() -> list[dict[str, Any]]:
    counts = selectors.count_by_state(include_deleted=True)
    total = sum(counts.values()) or 1
    return [
        {
            "state": state.value,
            "label": state.label,
            "count": counts[state.value],
            "colour": state_colour(state.value),
            "percent": round(100 * counts[state.value] / total, 2),
        }
        for state in TaskState
    ]


def deletions_since(since: datetime) -> dict[str, int]:
    counts = selectors.count_events_since(since, HistoryEvent.SOFT_DELETE, HistoryEvent.RESTORE)
    return {"deleted": counts[HistoryEvent.SOFT_DELETE], "restored": counts[HistoryEvent.RESTORE]}


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


def queues(now: datetime) -> list[dict[str, Any]]:
    """Every task queue (the known ones, and any other a queued task names), the default one first, with its queued
    tasks in SQL and how long the longest-waiting published one has waited."""
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    depths: dict[str, list[selectors.QueueDepth]] = defaultdict(list)
    for depth in selectors.queue_depths():
        depths[depth.queue or default].append(depth)
    rows = []
    for name in sorted({*services.task_queues(), *depths}, key=lambda name: (name != default, name)):
        parts = depths.get(name, [])
        oldest = min((d.oldest_published_at for d in parts if d.oldest_published_at is not None), default=None)
        rows.append(
            {
                "queue": name,
                "waiting": sum(d.waiting for d in parts),
                "scheduled": sum(d.scheduled for d in parts),
                "oldest_age": format_duration(now - oldest) if oldest is not None else "",
            }
        )
    return rows


def throughput(now: datetime) -> dict[str, Any]:
    """Tasks finished per minute over the last ``THROUGHPUT_MINUTES`` (the current minute, still filling, last)."""
    minutes = selectors.finished_per_minute(now, THROUGHPUT_MINUTES)
    top = max([m["finished"] for m in minutes] + [1])
    return {
        "minutes": [
            {
                **m,
                "label": timezone.localtime(m["minute"]).strftime("%H:%M"),
                "percent": round(100 * m["finished"] / top),
            }
            for m in minutes
        ],
        "total": sum(m["finished"] for m in minutes),
        "last_full_minute": minutes[-2]["finished"] if len(minutes) > 1 else 0,
    }


def durations() -> dict[str, Any]:
    """p50, p95 and p99 run times of the latest completed tasks (a sample of ``DURATION_SAMPLE``)."""
    figures = selectors.duration_percentiles(DURATION_SAMPLE)
    labels = {
        name: format_duration(timedelta(seconds=value)) if value is not None else "-"
        for name, value in figures.items()
        if name != "count"
    }
    return {"count": figures["count"], **labels}


def _live(now: datetime) -> dict[str, Any]:
    states = state_counts()
    return {
        "generated_at": now,
        "states": states,
        "total": sum(s["count"] for s in states),
        "in_trash": selectors.count_in_trash(),
        "deletions": deletions_since(now - timedelta(hours=24)),
        "queues": queues(now),
        "throughput": throughput(now),
        "durations": durations(),
        "workers_alive": selectors.count_live_workers(),
        "chart": chart(selectors.activity_per_hour(now, CHART_HOURS)),
        "drill": summary(last_drill()),
        "mirror_cache_seconds": int(MIRROR_CACHE_SECONDS),
        "refresh": REFRESH,
    }


def dashboard(now: datetime | None = None) -> dict[str, Any]:
    """The index page's figures: the live ones computed at most once per ``CACHE_SECONDS`` per process, the mirror
    sample once per ``MIRROR_CACHE_SECONDS``."""
    if now is not None:
        return {**_live(now), "mirror": mirror_sample(MIRROR_SAMPLE_SIZE)}
    return {
        **_cache.get("live", lambda: _live(timezone.now())),
        "mirror": _mirror_cache.get("mirror", lambda: mirror_sample(MIRROR_SAMPLE_SIZE)),
    }


def may_see(user: Any) -> bool:
    """Whether ``user`` may see the dashboard: whoever may view (or change) tasks."""
    return user is not None and (user.has_perm("tasks.view_task") or user.has_perm("tasks.change_task"))


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The dashboard alone, for the admin index to refresh it in place (htmx)."""
    if not may_see(request.user):
        raise PermissionDenied
    return TemplateResponse(request, "admin/crux_dashboard.html", {"dash": dashboard()})
