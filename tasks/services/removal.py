"""The only ways a task's rows leave or come back whole: erased by a purge, reinstated from its archive, loaded
from a backup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import models, transaction

from tasks.audit import Actor, HistoryEvent, audited, loading_rows
from tasks.exceptions import TaskError
from tasks.ids import TaskId, parse_task_id
from tasks.models import HistoryPurgeGrant, Task, TaskHistory, TaskMetrics, TaskOutput
from tasks.records import deserialize


def erase_tasks(task_ids: Sequence[TaskId], *, batch_size: int = 500) -> int:
    """Remove whole tasks with their history, outputs and metrics; returns how many.

    The narrow hook past the append-only history triggers: each task gets a
    HistoryPurgeGrant for the length of the transaction. Only the retention purge
    calls this, after it has archived the tasks and written their ledger rows.
    """
    erased = 0
    for start in range(0, len(task_ids), batch_size):
        ids = [parse_task_id(t) for t in task_ids[start : start + batch_size]]
        with transaction.atomic():
            HistoryPurgeGrant.objects.bulk_create([HistoryPurgeGrant(task_id=i) for i in ids], ignore_conflicts=True)
            models.QuerySet.delete(TaskHistory.objects.filter(task_id__in=ids))
            TaskOutput.objects.filter(task_id__in=ids).delete()
            TaskMetrics.objects.filter(task_id__in=ids).delete()
            erased += models.QuerySet.delete(Task.objects.filter(pk__in=ids))[1].get(Task._meta.label, 0)
            HistoryPurgeGrant.objects.filter(task_id__in=ids).delete()
    return erased


def reinstate(
    entry: Mapping[str, Any], *, history_head: tuple[int, str], actor: Actor, channel: str, reason: str
) -> Task:
    """Put an erased task back exactly as it was archived (task, history, outputs, metrics), then record it.

    ``entry`` is one task's archived rows (``tasks.records.task_entries``). The
    rows are inserted as they were, so no history is invented and the chain still
    verifies; ``history_head`` (count, hash) must match the archived chain's end.
    One new history row, event ``unarchive``, says who brought it back and why.
    Runs inside the caller's transaction.
    """
    rows = [entry["task"], *entry["history"], *entry["outputs"]]
    if entry["metrics"]:
        rows.append(entry["metrics"])
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for item in deserialize(rows):
        by_model.setdefault(type(item.object), []).append(item.object)
    for model in (Task, TaskHistory, TaskOutput, TaskMetrics):
        if model in by_model:
            models.QuerySet.bulk_create(model._base_manager.all(), by_model[model])
    task = Task.objects.select_for_update().get(pk=entry["task"]["pk"])
    if (task.history_count, task.history_head) != history_head:
        raise TaskError(f"archive of task {task.pk} does not match its ledger entry (history head differs)")
    with audited(actor, channel=channel, reason=reason, event=HistoryEvent.UNARCHIVE):
        task.save()
    return task


def load_rows(rows: Iterable[dict[str, Any]]) -> int:
    """Save rows of a backup (``tasks.records`` form, any model) exactly as they were; returns how many.

    Their history comes with them, so none is written; only a backup load into an
    empty database calls this, inside its transaction.
    """
    loaded = 0
    with loading_rows():
        for item in deserialize(rows):
            item.save()
            loaded += 1
    return loaded
