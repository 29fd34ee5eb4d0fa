"""Prometheus metrics at /metrics (staff, or a scraper with ``Authorization: Bearer <METRICS_TOKEN>``).

Two sources, so that every answer is the same whichever process serves it and no counter ever goes back:

- Counters and histograms kept where things happen (Celery publishes and their failures, mirror failures and
  reads, task run time and queue wait observed by the worker: ``crux.celery.observe_attempt``) use
  prometheus-client's multiprocess mode: each process writes its values to a file of
  ``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums the files of every process, those that ended included.
- Everything else is read from SQL at scrape time, so it covers every process and every machine: tasks by state,
  the trash, counters derived from the history rows (submissions, transitions, deletions, recoveries: the tally of
  the rows under its mark, ``tasks.models.HistoryTally``, and the rows above it) plus the rows purges removed
  (``retention.PurgedHistoryCount``), queues, workers, the deletion breaker, the last backup, purge
  and audit verification, the last backup drill, and a sample of the Redis mirror compared with SQL. Any other
  collector registered on prometheus-client's default registry is served too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from persistence.backup import last_backup
from persistence.drills import DrillCollector
from persistence.selectors import mirror_sample
from retention import selectors as retention
from tasks import selectors, services
from tasks.api.permissions import IsStaffOrMetricsToken
from tasks.audit import Channel, HistoryEvent
from tasks.states import TaskState

REQUEUE_SOURCES = frozenset({TaskState.INTERRUPTED, TaskState.FAILED, TaskState.CANCELLED})
# Families of prometheus-client's own collectors of the serving process (CPU, memory, GC): one process's figures,
# not the deployment's, so not served.
RUNTIME_PREFIXES = ("process_", "python_")


def _families() -> dict[str, Any]:
    return {
        "tasks": GaugeMetricFamily("crux_tasks", "Tasks not deleted, by state", labels=["state"]),
        "deleted": GaugeMetricFamily("crux_tasks_deleted", "Soft-deleted tasks in the trash (restorable)"),
        "submissions": CounterMetricFamily(
            "crux_task_submissions",
            "Tasks created, by channel (from history, purged rows included)",
            labels=["channel"],
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
    """Task counts by state, and counters derived from history: the rows in SQL (the tally's counts and the rows
    above its mark grouped) plus those purges removed, so a purge never lowers a counter."""

    def describe(self) -> Iterator[Any]:
        yield from _families().values()

    def collect(self) -> Iterator[Any]:
        families = _families()
        for state, n in sorted(selectors.count_by_state().items()):
            families["tasks"].add_metric([state], n)
        families["deleted"].add_metric([], selectors.count_in_trash())

        counts: Counter[tuple[str, ...]] = Counter()
        for row in [*selectors.count_history_by_kind(), *retention.purged_history_counts()]:
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


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class OperationsCollector(Collector):
    """What operators watch, read when scraped: queues, workers, the deletion breaker, the last backup, purge and
    audit verification, and the Redis mirror's drift on a sample of the newest tasks (``METRICS_MIRROR_SAMPLE``)."""

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        yield from self._queues()
        yield from self._workers()
        yield from self._retention()
        yield from self._mirror()
        backup = _gauge("crux_backup_last_success_timestamp_seconds", "When the newest backup in BACKUP_DIR was made")
        if (at := last_backup()) is not None:
            backup.add_metric([], at.timestamp())
        yield backup

    def _queues(self) -> Iterator[Any]:
        default = settings.CELERY_TASK_DEFAULT_QUEUE
        waiting, scheduled = Counter[str](), Counter[str]()
        oldest: dict[str, datetime] = {}
        for depth in selectors.queue_depths():
            name = depth.queue or default
            waiting[name] += depth.waiting
            scheduled[name] += depth.scheduled
            if depth.oldest_published_at is not None:
                oldest[name] = min(oldest.get(name, depth.oldest_published_at), depth.oldest_published_at)
        consumers = selectors.live_workers_by_queue()
        names = sorted({*services.task_queues(), *waiting, *scheduled, *consumers})
        tasks = _gauge(
            "crux_queue_tasks",
            "Queued tasks in SQL: published and waiting, or waiting for their start time "
            "(scheduled, not published yet)",
            ["queue", "status"],
        )
        age = _gauge(
            "crux_queue_oldest_age_seconds",
            "How long the longest-waiting published task of the queue has waited for a worker (0: none waits)",
            ["queue"],
        )
        workers = _gauge("crux_queue_workers", "Live worker instances consuming the queue", ["queue"])
        now = timezone.now()
        for name in names:
            tasks.add_metric([name, "waiting"], waiting[name])
            tasks.add_metric([name, "scheduled"], scheduled[name])
            age.add_metric([name], max(0.0, (now - oldest[name]).total_seconds()) if name in oldest else 0.0)
            workers.add_metric([name], consumers.get(name, 0))
        yield from (tasks, age, workers)

    def _workers(self) -> Iterator[Any]:
        alive = _gauge("crux_workers_alive", "Worker instances whose heartbeat is fresh (WORKER_STALE_SECONDS)")
        alive.add_metric([], selectors.count_live_workers())
        silent = _gauge(
            "crux_workers_silent",
            "Worker instances gone silent without stopping (killed, or cut off from the database)",
        )
        silent.add_metric([], selectors.count_silent_workers())
        yield from (alive, silent)

    def _retention(self) -> Iterator[Any]:
        tripped = _gauge("crux_deletion_breaker_tripped", "1 while the deletion breaker refuses deletions (a spike)")
        tripped_at = _gauge("crux_deletion_breaker_tripped_timestamp_seconds", "When the breaker last tripped")
        breaker = retention.deletion_breaker()
        tripped.add_metric([], 1 if breaker is not None and breaker.is_tripped else 0)
        if breaker is not None and breaker.tripped_at is not None:
            tripped_at.add_metric([], breaker.tripped_at.timestamp())
        purge = _gauge("crux_purge_last_timestamp_seconds", "When a retention purge last removed a task")
        if (at := retention.last_purge_at()) is not None:
            purge.add_metric([], at.timestamp())
        ok = _gauge("crux_audit_chain_ok", "1 if the last verification of the audit trail found it intact, 0 if not")
        problems = _gauge("crux_audit_verification_problems", "Problems the last audit verification found")
        verified = _gauge("crux_audit_verification_timestamp_seconds", "When the audit trail was last verified")
        if (last := retention.last_audit_verification()) is not None:
            ok.add_metric([], 0 if last.problems else 1)
            problems.add_metric([], last.problems)
            verified.add_metric([], last.finished_at.timestamp())
        yield from (tripped, tripped_at, purge, ok, problems, verified)

    def _mirror(self) -> Iterator[Any]:
        sample = mirror_sample(settings.METRICS_MIRROR_SAMPLE)
        up = _gauge("crux_mirror_up", "1 if Redis answered the mirror sample, 0 if it did not")
        up.add_metric([], 0 if sample["status"] == "unreachable" else 1)
        entries = _gauge(
            "crux_mirror_sample_entries",
            "Mirror entries of the newest tasks compared with SQL, by result (missing or stale: drift)",
            ["result"],
        )
        if sample["status"] != "unreachable":
            for result in ("consistent", "missing", "stale"):
                entries.add_metric([result], sample[result])
        yield from (up, entries)


class Exposition(Collector):
    """What /metrics serves: the per-process metrics summed over every process's file, then every family of the
    default registry that is neither one of those (this process's own share of them) nor this process's runtime."""

    def collect(self) -> Iterator[Any]:
        merged = list(MultiProcessCollector(None, path=str(settings.PROMETHEUS_MULTIPROC_DIR)).collect())
        names = {family.name for family in merged}
        yield from merged
        for family in REGISTRY.collect():
            if family.name not in names and not family.name.startswith(RUNTIME_PREFIXES):
                yield family


# What /metrics serves. The SQL collectors are not on the default registry: reading a process's own metric there
# (``REGISTRY.get_sample_value``) runs no query.
EXPOSITION = CollectorRegistry(auto_describe=False)
for collector in (Exposition(), TaskCollector(), OperationsCollector(), DrillCollector()):
    EXPOSITION.register(collector)


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
        return HttpResponse(generate_latest(EXPOSITION), content_type=CONTENT_TYPE_LATEST)
