"""The worker registry's writes: a worker instance reports itself, stops, and long-gone instances are forgotten.

Telemetry, not task state: no history rows. Times come from the database's clock, the one every reader compares
them with, so workers on machines whose clocks disagree are judged alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from tasks.models import Worker

# Instances forgotten per call: the registry holds one row per worker start, so a call clears any backlog quickly.
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class WorkerReport:
    """What a worker instance says of itself on each heartbeat."""

    name: str
    pid: int
    hostname: str
    queues: list[str]
    concurrency: int
    pool_pids: list[int]


def report_worker(report: WorkerReport) -> None:
    """Record a heartbeat of this instance: one UPDATE once its row exists, an INSERT the first time."""
    values = {
        "hostname": report.hostname,
        "queues": sorted(report.queues),
        "concurrency": report.concurrency,
        "pool_pids": sorted(report.pool_pids),
        "last_heartbeat": Now(),
        "stopped_at": None,
    }
    if Worker.objects.filter(name=report.name, pid=report.pid).update(**values):
        return
    try:
        with transaction.atomic():
            Worker.objects.create(name=report.name, pid=report.pid, started_at=Now(), **values)
    except IntegrityError:  # a concurrent first heartbeat of the same instance inserted it
        Worker.objects.filter(name=report.name, pid=report.pid).update(**values)


def stop_worker(name: str, pid: int) -> None:
    """Mark the instance stopped (a clean shutdown): it leaves the live list at once."""
    Worker.objects.filter(name=name, pid=pid, stopped_at__isnull=True).update(stopped_at=Now())


def forget_workers(older_than_seconds: float) -> int:
    """Delete up to ``PRUNE_BATCH`` instances silent for longer than ``older_than_seconds``; returns how many."""
    silent = Worker.objects.filter(last_heartbeat__lt=Now() - timedelta(seconds=older_than_seconds))
    pks = list(silent.order_by("last_heartbeat").values_list("pk", flat=True)[:PRUNE_BATCH])
    if not pks:
        return 0
    deleted, _ = Worker.objects.filter(pk__in=pks).delete()
    return deleted
