"""Attempts seen from outside: what a task's last attempt left behind, for the Celery view of it
(``tasks.tasks.execute_task``), and which worker instances hold running attempts (a worker's start-up recovery)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from tasks.ids import TaskId, parse_task_id
from tasks.models import Task
from tasks.states import TaskState


class AttemptEnd(NamedTuple):
    error: str  # the attempt's error, as stored (redacted)
    retry_at: datetime | None  # when a retry waits for, None if it does not wait


def attempt_end(task_id: TaskId) -> AttemptEnd:
    """The error and the retry time the task's last attempt recorded (empty if the task is gone)."""
    row = Task.objects.filter(pk=parse_task_id(task_id)).values_list("last_error", "run_after").first()
    return AttemptEnd(*row) if row is not None else AttemptEnd("", None)


def running_instances(node_name: str) -> set[str]:
    """The worker ids' instance parts (``<node>:<instance>:<pid>``) of the attempts running under ``node_name``;
    a worker id of another shape (an older ``<node>:<pid>``) counts as an instance of its own, by its pid."""
    worker_ids = Task.objects.filter(state=TaskState.RUNNING, worker_id__startswith=f"{node_name}:").values_list(
        "worker_id", flat=True
    )
    return {worker_id[len(node_name) + 1 :].split(":")[0] for worker_id in worker_ids}
