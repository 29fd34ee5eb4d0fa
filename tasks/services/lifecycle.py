"""What clients and staff do to a task: move it, cancel it, edit it, put it in the trash and take it out, recover it."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from tasks import dispatch, hooks
from tasks.audit import CELERY_REVOKE_ACTOR, Actor, Channel, actor_label, audited
from tasks.exceptions import AttemptLimitReached, StaleState, TaskError, TaskNotFound
from tasks.ids import TaskId, celery_id, parse_task_id, task_id_of
from tasks.models import Task
from tasks.services.base import (
    EDITABLE_FIELDS,
    TRANSITION_FIELDS,
    apply_transition,
    locked_task,
    refuse_unknown,
    validate_task,
)
from tasks.states import TERMINAL_STATES, TaskState, check_state

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# What a requeue accepts, through every door (the API's recover, the admin's requeue): a task that ended
# without completing. In any other state there is nothing to requeue.
REQUEUE_ON_RECOVER = frozenset({TaskState.INTERRUPTED, TaskState.FAILED, TaskState.CANCELLED})


def requeue_refusal(task: Task) -> str | None:
    """Why ``task`` cannot be requeued, or None: the one rule the API, the admin and the service apply.

    Not a deleted task (restore it first), only the states above, and never past the attempt limit.
    """
    if task.is_deleted:
        return "in the trash: restore it first"
    if task.state not in REQUEUE_ON_RECOVER:
        return f"{task.state}: only interrupted, failed or cancelled tasks can be requeued"
    if task.attempt_count >= task.max_attempts:
        return (
            f"attempt limit reached: {task.attempt_count} of {task.max_attempts} attempts used "
            "(raise max_attempts to run it again)"
        )
    return None


def _check_expected(task: Task, expected_state: str | None, expected_attempt: int | None) -> None:
    if expected_state is not None and task.state != check_state(expected_state):
        raise StaleState(f"task {task.pk} is {task.state}, not {expected_state}")
    if expected_attempt is not None and task.attempt_count != expected_attempt:
        raise StaleState(
            f"task {task.pk} is at attempt {task.attempt_count}, not {expected_attempt}", field="attempt_count"
        )


def transition(
    task_id: TaskId,
    to_state: str,
    *,
    actor: Actor,
    channel: str,
    reason: str = "",
    expected_state: str | None = None,
    expected_attempt: int | None = None,
    details: dict[str, Any] | None = None,
    **updates: Any,
) -> Task:
    """Move a task to ``to_state`` (compare-and-set on state/attempt when given)."""
    target = check_state(to_state)
    refuse_unknown(updates, TRANSITION_FIELDS)
    with transaction.atomic():
        task = locked_task(task_id)
        _check_expected(task, expected_state, expected_attempt)
        return apply_transition(task, target, actor=actor, channel=channel, reason=reason, details=details, **updates)


def cancel(task_id: TaskId, *, actor: Actor, channel: str, reason: str) -> Task:
    """Cancel a task that has not finished, and stop its Celery execution after commit."""
    with transaction.atomic():
        task = locked_task(task_id)
        was = task.state
        apply_transition(task, TaskState.CANCELLED, actor=actor, channel=channel, reason=reason)
        if was in (TaskState.QUEUED, TaskState.RUNNING):
            revoked = current_publish(task)
            transaction.on_commit(partial(dispatch.revoke, revoked, terminate=was == TaskState.RUNNING))
    return task


def current_publish(task: Task) -> str:
    """The Celery id a revoke of the task's current publish names: its latest publish's, or, for a task not
    published yet (a start still ahead), its bare id."""
    return task.celery_task_id or str(task.pk)


def cancel_revoked(celery_task_id: str, *, hostname: str, terminated: bool, signal: str = "") -> Task | None:
    """Record as a cancel a revoke sent with Celery's own tools (``celery control revoke``, Flower), as the worker
    ``hostname`` saw it: it terminated the running attempt, or discarded the queued message. None: nothing to record.

    A compare-and-set on the publish: only the task's current publish is cancelled (a revoke of an older one is
    stale), and a task already ended (Crux's own cancel sent this revoke) writes nothing. When the attempt was
    terminated, the attempt's own end may have requeued it first (a new publish): the revoke still wins.
    """
    pk = task_id_of(celery_task_id)
    with transaction.atomic():
        try:
            task = locked_task(pk)
        except TaskError:  # not a task id, or the task is gone
            return None
        current = current_publish(task)
        requeued_since = (
            terminated
            and task.state == TaskState.QUEUED
            and celery_id(task.pk, task.dispatch_count - 1) == celery_task_id
        )
        if task.state in TERMINAL_STATES or (current != celery_task_id and not requeued_since):
            return None
        if terminated:
            reason = "revoked with Celery's control: the running attempt was terminated"
        else:
            reason = "revoked with Celery's control: its message was discarded"
        details = {"hostname": hostname, "terminated": terminated, "signal": signal, "celery_task_id": celery_task_id}
        return apply_transition(
            task, TaskState.CANCELLED, actor=CELERY_REVOKE_ACTOR, channel=Channel.CELERY, reason=reason, details=details
        )


def update_task(task_id: TaskId, *, actor: Actor, channel: str, reason: str, **changes: Any) -> Task:
    """Edit client-editable fields; the history row lists old and new values."""
    refuse_unknown(changes, EDITABLE_FIELDS)
    with transaction.atomic():
        task = locked_task(task_id)
        for name, value in changes.items():
            setattr(task, name, value)
        validate_task(task, payload="handler" in changes)
        with audited(actor, channel=channel, reason=reason):
            task.save()
    return task


def soft_delete(task_id: TaskId, *, user: User, channel: str, reason: str) -> Task:
    """Flag a task deleted (who, when, why); it stays restorable until a retention purge.

    Each soft delete is first admitted by the deletion guards (``tasks.hooks``):
    the deletion breaker refuses it while a spike is unacknowledged.
    """
    pk = parse_task_id(task_id)
    current = Task.objects.filter(pk=pk).values("deleted_at").first()
    if current is None:
        raise TaskNotFound(pk)
    if current["deleted_at"] is not None:
        raise TaskError(f"task {pk} is already deleted", field="task_id")
    hooks.admit_deletion(kind="soft_delete", actor=actor_label(user)[0], channel=channel, task_id=pk)
    return mark_deleted(pk, user=user, channel=channel, reason=reason)


def mark_deleted(task_id: TaskId, *, user: User, channel: str, reason: str) -> Task:
    """The write of a soft delete already admitted by the deletion guards: by ``soft_delete``, or by
    ``apply_to_all`` for a whole bulk at once."""
    with transaction.atomic():
        task = locked_task(task_id)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is already deleted", field="task_id")
        task.deleted_at = timezone.now()
        task.deleted_by = user
        task.delete_reason = reason
        with audited(user, channel=channel, reason=reason):
            task.save()
    return task


def restore(task_id: TaskId, *, user: User, channel: str, reason: str) -> Task:
    """Take a soft-deleted task out of the trash; the history keeps both the delete and the restore."""
    with transaction.atomic():
        task = locked_task(task_id)
        if not task.is_deleted:
            raise TaskError(f"task {task.pk} is not deleted", field="task_id")
        task.deleted_at = None
        task.deleted_by = None
        task.delete_reason = ""
        with audited(user, channel=channel, reason=reason):
            task.save()
    return task


def recover(
    task_id: TaskId, *, actor: Actor, channel: str, reason: str, expected_state: str | None = None
) -> tuple[Task, bool]:
    """Requeue an interrupted, failed or cancelled task; returns (task, requeued). A task in another state
    is left as it is (requeued False).

    Refused, with nothing written: a soft-deleted task (restore it first), a task that used every
    attempt (AttemptLimitReached: a requeue never grants an attempt past ``max_attempts``), and, when
    ``expected_state`` is given (what an operator confirmed), a task that moved meanwhile (StaleState).
    """
    with transaction.atomic():
        task = locked_task(task_id)
        _check_expected(task, expected_state, None)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is deleted: restore it before recovering it", field="task_id")
        if task.state not in REQUEUE_ON_RECOVER:
            return task, False
        refusal = requeue_refusal(task)
        if refusal:
            raise AttemptLimitReached(f"task {task.pk} cannot be requeued: {refusal}")
        apply_transition(task, TaskState.QUEUED, actor=actor, channel=channel, reason=reason)
        return task, True
