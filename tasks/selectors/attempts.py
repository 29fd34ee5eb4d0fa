"""What the last attempt of a task left behind, for the Celery view of it (``tasks.tasks.execute_task``)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from tasks.ids import TaskId, parse_task_id
from tasks.models import Task


class AttemptEnd(NamedTuple):
    error: str  # the attempt's error, as stored (redacted)
    retry_at: datetime | None  # when a retry waits for, None if it does not wait


def attempt_end(task_id: TaskId) -> AttemptEnd:
    """The error and the retry time the task's last attempt recorded (empty if the task is gone)."""
    row = Task.objects.filter(pk=parse_task_id(task_id)).values_list("last_error", "run_after").first()
    return AttemptEnd(*row) if row is not None else AttemptEnd("", None)
