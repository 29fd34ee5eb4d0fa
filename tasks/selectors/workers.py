"""The worker registry read for the Workers page and the dashboard: live instances with the tasks each process
runs now, recently gone ones, how many are alive.

A row is live while it is not stopped and its heartbeat is younger than ``WORKER_STALE_SECONDS``, judged by the
database's clock (the one its heartbeats were written with). Every query reads the small registry through its
heartbeat index, or the running tasks through the state index, capped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import DurationField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from tasks.models import Task, Worker
from tasks.states import TaskState

# At most this many running tasks are placed under their workers (a worker's concurrency bounds them anyway).
RUNNING_TASKS_SHOWN = 500
GONE_WORKERS_SHOWN = 20


@dataclass(frozen=True)
class RunningTask:
    pk: str
    title: str
    handler: str
    progress: float
    phase: str
    running_for: timedelta | None


@dataclass(frozen=True)
class WorkerProcess:
    pid: int
    tasks: list[RunningTask]


@dataclass(frozen=True)
class LiveWorker:
    worker: Worker
    heartbeat_age: timedelta
    processes: list[WorkerProcess]

    @property
    def running(self) -> int:
        return sum(len(process.tasks) for process in self.processes)


def _stale_before(stale_seconds: float | None) -> CombinedExpression:
    """The heartbeat time before which an instance counts as gone (by the database's clock)."""
    seconds = settings.WORKER_STALE_SECONDS if stale_seconds is None else stale_seconds
    return Now() - timedelta(seconds=seconds)


def _with_age(workers: QuerySet[Worker]) -> QuerySet[Worker]:
    return workers.annotate(heartbeat_age=ExpressionWrapper(Now() - F("last_heartbeat"), output_field=DurationField()))


def _live(stale_seconds: float | None) -> QuerySet[Worker]:
    return Worker.objects.filter(stopped_at__isnull=True, last_heartbeat__gte=_stale_before(stale_seconds))


def count_live_workers(stale_seconds: float | None = None) -> int:
    return _live(stale_seconds).count()


def live_workers_by_queue(stale_seconds: float | None = None) -> dict[str, int]:
    """How many live instances consume each queue (a queue no live instance consumes is absent)."""
    counts: dict[str, int] = defaultdict(int)
    for queues in _live(stale_seconds).values_list("queues", flat=True):
        for queue in set(queues or ()):
            counts[queue] += 1
    return dict(counts)


def count_silent_workers(stale_seconds: float | None = None) -> int:
    """Instances that went silent without stopping (killed, or cut off from the database) and are not forgotten yet."""
    return Worker.objects.filter(stopped_at__isnull=True, last_heartbeat__lt=_stale_before(stale_seconds)).count()


def running_tasks_by_process() -> dict[tuple[str, int], dict[int, list[RunningTask]]]:
    """Running tasks by worker instance (node name, main pid), then by the pid of the process that runs them."""
    now = timezone.now()
    rows = (
        Task.objects.filter(state=TaskState.RUNNING)
        .order_by("started_at")
        .values_list("pk", "title", "handler", "progress", "current_phase", "started_at", "worker_id")[
            :RUNNING_TASKS_SHOWN
        ]
    )
    placed: dict[tuple[str, int], dict[int, list[RunningTask]]] = defaultdict(lambda: defaultdict(list))
    for pk, title, handler, progress, phase, started_at, worker_id in rows:
        parts = worker_id.rsplit(":", 2)  # <node name>:<instance (main pid)>:<pid of the process running it>
        if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
            continue  # an older worker id without its instance: no live instance can claim it
        name, instance, child = parts[0], int(parts[1]), int(parts[2])
        running_for = now - started_at if started_at is not None else None
        placed[(name, instance)][child].append(RunningTask(str(pk), title, handler, progress, phase, running_for))
    return placed


def live_workers(stale_seconds: float | None = None) -> list[LiveWorker]:
    """Live instances by node name, each with its pool's processes and the tasks they run now."""
    running = running_tasks_by_process()
    live = []
    for worker in _with_age(_live(stale_seconds)).order_by("name", "pid"):
        by_pid = running.get((worker.name, worker.pid), {})
        pids = [*worker.pool_pids, *sorted(set(by_pid) - set(worker.pool_pids))]
        processes = [WorkerProcess(pid, by_pid.get(pid, [])) for pid in pids]
        live.append(LiveWorker(worker, worker.heartbeat_age, processes))  # type: ignore[attr-defined]  # annotated
    return live


def gone_workers(stale_seconds: float | None = None, limit: int = GONE_WORKERS_SHOWN) -> list[Worker]:
    """The latest instances that stopped, or went silent (killed, or cut off from the database), newest first."""
    gone = Q(last_heartbeat__lt=_stale_before(stale_seconds)) | Q(stopped_at__isnull=False)
    return list(_with_age(Worker.objects.filter(gone)).order_by("-last_heartbeat")[:limit])
