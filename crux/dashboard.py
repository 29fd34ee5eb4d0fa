"""Figures for the admin index: tasks by state, deletions, mirror consistency, activity per hour.

Every query here is bounded by an index (state, created_at, the history's
created_at, the partial index on deleted tasks) or by a sample, and the result
is cached for ``CACHE_SECONDS`` per process, so the index page stays cheap on a
large table and with Redis down.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from persistence.selectors import mirror_sample
from tasks import selectors
from tasks.admin.lists import TTLCache
from tasks.admin.timeline import state_colour
from tasks.audit import HistoryEvent
from tasks.states import TaskState

CACHE_SECONDS = 30.0
MIRROR_SAMPLE_SIZE = 200
CHART_HOURS = 24

_cache = TTLCache(ttl=CACHE_SECONDS)


def clear_cache() -> None:
    _cache.clear()


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
    return {
        "deleted": selectors.count_events_since(HistoryEvent.SOFT_DELETE, since),
        "restored": selectors.count_events_since(HistoryEvent.RESTORE, since),
    }


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
        "in_trash": selectors.count_in_trash(),
        "deletions": deletions_since(now - timedelta(hours=24)),
        "mirror": mirror_sample(MIRROR_SAMPLE_SIZE),
        "chart": chart(selectors.activity_per_hour(now, CHART_HOURS)),
        "cache_seconds": int(CACHE_SECONDS),
    }


def dashboard(now: datetime | None = None) -> dict[str, Any]:
    """The index page's figures, computed at most once per ``CACHE_SECONDS`` per process."""
    if now is not None:
        return _compute(now)
    return _cache.get("dashboard", lambda: _compute(timezone.now()))
