"""Prometheus metrics at /metrics (staff, or a scraper with ``Authorization: Bearer <METRICS_TOKEN>``).

Task figures are read from SQL at scrape time, so they count what every process
did (web, workers, beat, commands), not only this one: tasks by state, the
trash, and from the history rows submissions, transitions, deletions and
recoveries. Counters kept in this process (mirror failures and reads, Celery
publishes) come from prometheus-client's default registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from tasks import selectors
from tasks.api.permissions import IsStaffOrMetricsToken
from tasks.audit import Channel, HistoryEvent
from tasks.states import TaskState

REQUEUE_SOURCES = frozenset({TaskState.INTERRUPTED, TaskState.FAILED, TaskState.CANCELLED})


def _families() -> dict[str, Any]:
    return {
        "tasks": GaugeMetricFamily("crux_tasks", "Tasks not deleted, by state", labels=["state"]),
        "deleted": GaugeMetricFamily("crux_tasks_deleted", "Soft-deleted tasks in the trash (restorable)"),
        "submissions": CounterMetricFamily(
            "crux_task_submissions", "Tasks created, by channel (from history)", labels=["channel"]
        ),
        "transitions": CounterMetricFamily(
            "crux_task_transitions", "State transitions, by target state and channel", labels=["state", "channel"]
        ),
        "deletions": CounterMetricFamily("crux_task_deletions", "Soft deletions, by channel", labels=["channel"]),
        "recoveries": CounterMetricFamily(
            "crux_task_recoveries",
            "Recovery steps: every change by the recovery sweep, and requeues of interrupted, failed or "
            "cancelled tasks by any channel",
            labels=["state", "channel"],
        ),
    }


class TaskCollector(Collector):
    """Reads task and history counts from SQL when scraped (one GROUP BY on each table)."""

    def describe(self) -> Iterator[Any]:
        yield from _families().values()

    def collect(self) -> Iterator[Any]:
        families = _families()
        for state, n in sorted(selectors.count_by_state().items()):
            families["tasks"].add_metric([state], n)
        families["deleted"].add_metric([], selectors.count_in_trash())

        counts: Counter[tuple[str, ...]] = Counter()
        for row in selectors.count_history_by_kind():
            event, channel, state = row["event"], row["channel"], row["state_to"]
            if event == HistoryEvent.CREATED:
                counts["submissions", channel] += row["n"]
            elif event == HistoryEvent.SOFT_DELETE:
                counts["deletions", channel] += row["n"]
            if event == HistoryEvent.TRANSITION:
                counts["transitions", state, channel] += row["n"]
                requeue = state == TaskState.QUEUED and row["state_from"] in REQUEUE_SOURCES
                if channel == Channel.RECOVERY or requeue:
                    counts["recoveries", state, channel] += row["n"]
        for (name, *labels), n in sorted(counts.items()):
            families[name].add_metric(labels, n)
        yield from families.values()


REGISTRY.register(TaskCollector())


class _PrometheusText(BaseRenderer):
    """Lets content negotiation accept Prometheus' Accept header; errors render as plain text."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        return f"{detail}\n".encode()


class MetricsView(APIView):
    """Prometheus exposition of Crux's metrics."""

    permission_classes = [IsStaffOrMetricsToken]
    renderer_classes = [_PrometheusText]
    throttle_classes: list[Any] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
