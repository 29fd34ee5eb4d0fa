"""Attempts seen from outside: what a task's last attempt left behind, for the Celery view of it
(``tasks.tasks.execute_task``), and which worker instances hold running attempts (a worker's start-up recovery)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from tasks.ids import TaskId, celery_id, parse_task_id, task_id_of, uuid_or_none
from tasks.models import Task
from tasks.states import TaskState


class AttemptEnd(NamedTuple):
    error: str  # the attempt's error, as stored (redacted)
    retry_at: datetime | None  # when a retry waits for, None if it does not wait


def attempt_end(task_id: TaskId) -> AttemptEnd:
    """The error and the retry time the task's last attempt recorded (empty if the task is gone)."""
    row = Task.objects.filter(pk=parse_task_id(task_id)).values_list("last_error", "run_after").first()
    return AttemptEnd(*row) if row is not None else AttemptEnd("", None)


class CurrentDelivery(NamedTuple):
    state: str  # the task's: running or completed
    hostname: str  # the worker's node name
    pid: int | None  # the pool process that ran the attempt
    started_at: datetime | None
    completed_at: datetime | None


def current_delivery(celery_task_id: str) -> CurrentDelivery | None:
    """The attempt a delivery (its Celery id, ``<task id>.<publish count>``) claimed, as the task row tells it while
    the attempt runs and once it completed (a final state: no later publish follows): this publish is the task's
    current one. None for another publish's attempt, a task in any other state, and an id that names no task."""
    pk = uuid_or_none(task_id_of(celery_task_id))
    if pk is None:
        return None
    current = Task.objects.filter(pk=pk, state__in=(TaskState.RUNNING, TaskState.COMPLETED)).values_list(
        "state", "worker_id", "started_at", "completed_at", "dispatch_count"
    )
    row = current.first()
    if row is None or celery_id(pk, row[4]) != celery_task_id:
        return None
    state, worker_id, started_at, completed_at, _ = row
    parts = worker_id.rsplit(":", 2)  # "<node name>:<instance>:<pid>" (an older "<node name>:<pid>")
    pid = int(parts[-1]) if parts[-1].isdigit() else None
    return CurrentDelivery(state, parts[0], pid, started_at, completed_at)


def running_instances(node_name: str) -> set[str]:
    """The worker ids' instance parts (``<node>:<instance>:<pid>``) of the attempts running under ``node_name``;
    a worker id of another shape (an older ``<node>:<pid>``) counts as an instance of its own, by its pid."""
    worker_ids = Task.objects.filter(state=TaskState.RUNNING, worker_id__startswith=f"{node_name}:").values_list(
        "worker_id", flat=True
    )
    return {worker_id[len(node_name) + 1 :].split(":")[0] for worker_id in worker_ids}
