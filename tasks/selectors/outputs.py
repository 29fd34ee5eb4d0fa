"""A task's outputs as a log is read, oldest first: every line, or the latest ones (the live tail)."""

from __future__ import annotations

from typing import NamedTuple

from django.db.models import QuerySet

from tasks.ids import TaskId
from tasks.models import TaskOutput

# A task's outputs in the order they were written, which their ids follow (the index ``output_task_order``).
OUTPUT_ORDER = ("id",)


class OutputTail(NamedTuple):
    lines: list[TaskOutput]  # the latest outputs, oldest first
    total: int  # how many the task has in all


def task_outputs(task_id: TaskId) -> QuerySet[TaskOutput]:
    """Every output of the task, oldest first."""
    return TaskOutput.objects.filter(task_id=task_id).order_by(*OUTPUT_ORDER)


def output_tail(task_id: TaskId, size: int) -> OutputTail:
    """The task's last ``size`` outputs, oldest first, and its count (counted only when there are more)."""
    latest = list(TaskOutput.objects.filter(task_id=task_id).order_by(*(f"-{name}" for name in OUTPUT_ORDER))[:size])
    latest.reverse()
    total = len(latest) if len(latest) < size else TaskOutput.objects.filter(task_id=task_id).count()
    return OutputTail(latest, total)
