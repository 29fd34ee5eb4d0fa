"""Writes of the task domain: the one door through which every task change passes.

Each function validates first (typed errors, nothing written), then changes the
task inside a transaction with the row locked; the audit signals write the
history row in that same transaction and the mirror is refreshed after commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from tasks.audit import audited
from tasks.exceptions import InvalidTaskData, StaleState, TaskError, TaskNotFound
from tasks.models import HistoryPurgeGrant, Task, TaskHistory, TaskMetrics, TaskOutput
from tasks.states import TERMINAL_STATES, TaskState, check_state, check_transition

# What clients may set on a task (at creation or by an edit).
EDITABLE_FIELDS = frozenset(
    {
        "title",
        "description",
        "role",
        "handler",
        "provider",
        "model",
        "branch",
        "worktree_path",
        "base_branch",
        "commit_hash",
        "target_dir",
        "full_access",
        "provider_override",
        "repository_url",
        "acceptance_criteria",
        "metadata",
        "max_attempts",
    }
)
CREATE_FIELDS = EDITABLE_FIELDS | {"request_payload"}
# What an execution step may set together with a state transition.
TRANSITION_FIELDS = frozenset(
    {
        "result",
        "last_error",
        "celery_task_id",
        "attempt_count",
        "partial_results",
        "progress",
        "current_phase",
    }
)


def parse_task_id(task_id: Any) -> uuid.UUID:
    """The task id as a UUID, or InvalidTaskData naming the ``task_id`` field."""
    if isinstance(task_id, uuid.UUID):
        return task_id
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        raise InvalidTaskData({"task_id": [f"{task_id!r} is not a valid UUID."]}) from None


def _locked(task_id: Any) -> Task:
    pk = parse_task_id(task_id)
    try:
        return Task.objects.select_for_update().get(pk=pk)
    except Task.DoesNotExist:
        raise TaskNotFound(pk) from None


def _refuse_unknown(fields: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidTaskData({name: ["This field cannot be set here."] for name in unknown})


def _validate(task: Task) -> None:
    try:
        task.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise InvalidTaskData(exc.message_dict) from None


def create_task(
    *,
    owner: Any,
    actor: Any,
    channel: str,
    reason: str = "created",
    **fields: Any,
) -> Task:
    """Create a pending task and its first history row, or raise InvalidTaskData."""
    _refuse_unknown(fields, CREATE_FIELDS)
    task = Task(owner=owner, **fields)
    _validate(task)
    with audited(actor, channel=channel, reason=reason):
        task.save()
    return task


def transition(
    task_id: Any,
    to_state: str,
    *,
    actor: Any,
    channel: str,
    reason: str = "",
    expected_state: str | None = None,
    expected_attempt: int | None = None,
    details: dict[str, Any] | None = None,
    **updates: Any,
) -> Task:
    """Move a task to ``to_state`` (compare-and-set on state/attempt when given)."""
    target = check_state(to_state)
    _refuse_unknown(updates, TRANSITION_FIELDS)
    with transaction.atomic():
        task = _locked(task_id)
        if expected_state is not None and task.state != check_state(expected_state):
            raise StaleState(f"task {task.pk} is {task.state}, not {expected_state}")
        if expected_attempt is not None and task.attempt_count != expected_attempt:
            raise StaleState(
                f"task {task.pk} is at attempt {task.attempt_count}, not {expected_attempt}",
                field="attempt_count",
            )
        check_transition(task.state, target)
        now = timezone.now()
        task.state = target
        for name, value in updates.items():
            setattr(task, name, value)
        if target == TaskState.RUNNING:
            task.started_at = now
        if target in TERMINAL_STATES:
            task.completed_at = now
        elif task.completed_at is not None:
            task.completed_at = None
        if target == TaskState.FAILED:
            task.error_count += 1
        _validate(task)
        with audited(actor, channel=channel, reason=reason, details=details):
            task.save()
    return task


def update_task(task_id: Any, *, actor: Any, channel: str, reason: str, **changes: Any) -> Task:
    """Edit client-editable fields; the history row lists old and new values."""
    _refuse_unknown(changes, EDITABLE_FIELDS)
    with transaction.atomic():
        task = _locked(task_id)
        for name, value in changes.items():
            setattr(task, name, value)
        _validate(task)
        with audited(actor, channel=channel, reason=reason):
            task.save()
    return task


def soft_delete(task_id: Any, *, user: Any, channel: str, reason: str) -> Task:
    """Flag a task deleted (who, when, why); it stays restorable until a retention purge."""
    with transaction.atomic():
        task = _locked(task_id)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is already deleted", field="task_id")
        task.deleted_at = timezone.now()
        task.deleted_by = user
        task.delete_reason = reason
        with audited(user, channel=channel, reason=reason):
            task.save()
    return task


def restore(task_id: Any, *, user: Any, channel: str, reason: str) -> Task:
    """Bring a soft-deleted task back; the history keeps both the delete and the restore."""
    with transaction.atomic():
        task = _locked(task_id)
        if not task.is_deleted:
            raise TaskError(f"task {task.pk} is not deleted", field="task_id")
        task.deleted_at = None
        task.deleted_by = None
        task.delete_reason = ""
        with audited(user, channel=channel, reason=reason):
            task.save()
    return task


def erase_tasks(task_ids: list[Any], *, batch_size: int = 500) -> int:
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
