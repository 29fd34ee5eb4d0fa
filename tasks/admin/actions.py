"""The admin's task actions: each one through a confirmation page, a reason and a service call.

An action is declared once here (``ACTIONS``): the permission it needs, which
tasks it applies to (and why others are skipped), and the ``tasks.services``
call that performs it with the staff user as actor and ``admin`` as channel, so
the service writes the history row. ``TaskAdmin`` turns each into a changelist
action, a button on the task page and a confirmation view. A confirmed action
applies to every selected task or to none (``tasks.services.apply_to_all``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django import forms

from tasks import hooks, services
from tasks.audit import Channel
from tasks.models import Task
from tasks.states import TERMINAL_STATES, TaskState

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# The most tasks one confirmation page lists and one action changes.
MAX_TASKS_PER_ACTION = 500


@dataclass(frozen=True)
class ActionSpec:
    name: str
    permission: str  # codename in the ``tasks`` app
    title: str  # "Soft-delete tasks"
    verb: str  # "soft-delete"
    past: str  # "soft-deleted"
    explanation: str
    skip_reason: Callable[[Task], str | None]
    perform: Callable[[Task, User, str], Task]
    note: Callable[[Task], str] = field(default=lambda task: "")
    danger: bool = False
    deletion: bool = False  # admitted by the deletion guards as one bulk soft delete

    @property
    def perm(self) -> str:
        return f"tasks.{self.permission}"

    @property
    def admin_action_name(self) -> str:
        return f"{self.name}_selected"


def _skip_soft_delete(task: Task) -> str | None:
    return "already in the trash" if task.is_deleted else None


def _note_soft_delete(task: Task) -> str:
    if task.state in (TaskState.RUNNING, TaskState.QUEUED):
        return f"still {task.state}: soft delete does not stop it (a queued task is not started)"
    return ""


def _skip_restore(task: Task) -> str | None:
    return None if task.is_deleted else "not in the trash"


def _skip_requeue(task: Task) -> str | None:
    return services.requeue_refusal(task)


def _note_requeue(task: Task) -> str:
    return f"attempt {task.attempt_count + 1} (limit {task.max_attempts}) after {task.state}"


def _skip_queue(task: Task) -> str | None:
    if task.is_deleted:
        return "in the trash"
    return None if task.state == TaskState.PENDING else f"not pending ({task.state})"


def _note_queue(task: Task) -> str:
    return "waits for its start time" if task.run_after is not None else ""


def _skip_cancel(task: Task) -> str | None:
    return f"already {task.state}" if task.state in TERMINAL_STATES else None


def _note_cancel(task: Task) -> str:
    return "its worker is told to stop" if task.state == TaskState.RUNNING else ""


def _soft_delete(task: Task, user: User, reason: str) -> Task:
    # Admitted beforehand with the whole bulk (``perform``), as one deliberate deletion operation.
    return services.mark_deleted(task.pk, user=user, channel=Channel.ADMIN, reason=reason)


def _restore(task: Task, user: User, reason: str) -> Task:
    return services.restore(task.pk, user=user, channel=Channel.ADMIN, reason=reason)


def _requeue(task: Task, user: User, reason: str) -> Task:
    # The API's recover service; compare-and-set on the state the operator confirmed (moved meanwhile: StaleState).
    return services.recover(task.pk, actor=user, channel=Channel.ADMIN, reason=reason, expected_state=task.state)[0]


def _queue(task: Task, user: User, reason: str) -> Task:
    # Compare-and-set on pending: a task queued or cancelled meanwhile is refused (StaleState), not queued twice.
    return services.transition(
        task.pk, TaskState.QUEUED, actor=user, channel=Channel.ADMIN, reason=reason, expected_state=TaskState.PENDING
    )


def _cancel(task: Task, user: User, reason: str) -> Task:
    return services.cancel(task.pk, actor=user, channel=Channel.ADMIN, reason=reason)


ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="soft_delete",
            permission="soft_delete_task",
            title="Soft-delete tasks",
            verb="soft-delete",
            past="soft-deleted",
            explanation=(
                "The tasks move to the trash: hidden from nobody, restorable by staff, and purged only by a "
                "retention policy after its grace period (with a backup first). Who, when and why is recorded."
            ),
            skip_reason=_skip_soft_delete,
            perform=_soft_delete,
            note=_note_soft_delete,
            danger=True,
            deletion=True,
        ),
        ActionSpec(
            name="restore",
            permission="restore_task",
            title="Restore tasks from the trash",
            verb="restore",
            past="restored",
            explanation="The tasks leave the trash; their history keeps both the deletion and the restore.",
            skip_reason=_skip_restore,
            perform=_restore,
        ),
        ActionSpec(
            name="requeue",
            permission="recover_task",
            title="Requeue (recover) tasks",
            verb="requeue",
            past="requeued",
            explanation=(
                "Interrupted, failed or cancelled tasks go back to the queue and run again on a worker. "
                "A task whose state changes before you confirm is left alone."
            ),
            skip_reason=_skip_requeue,
            perform=_requeue,
            note=_note_requeue,
        ),
        ActionSpec(
            name="queue",
            permission="add_task",  # what submitting a task in the admin needs: this submits a pending one
            title="Queue selected pending tasks",
            verb="queue",
            past="queued",
            explanation=(
                "Pending tasks (created without being submitted) go to their queue and run on a worker. "
                "Tasks that are not pending are skipped."
            ),
            skip_reason=_skip_queue,
            perform=_queue,
            note=_note_queue,
        ),
        ActionSpec(
            name="cancel",
            permission="cancel_task",
            title="Cancel tasks",
            verb="cancel",
            past="cancelled",
            explanation="Unfinished tasks become cancelled; a running one is stopped. They can be requeued later.",
            skip_reason=_skip_cancel,
            perform=_cancel,
            note=_note_cancel,
            danger=True,
        ),
    )
}


class ConfirmActionForm(forms.Form):
    reason = forms.CharField(
        min_length=3,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "autofocus": True}),
        help_text="Recorded in each task's history with your name.",
    )


def parse_ids(values: list[str]) -> tuple[list[uuid.UUID], list[str]]:
    """(valid ids without duplicates, in order; the values that are not task ids)."""
    ids: list[uuid.UUID] = []
    invalid: list[str] = []
    seen: set[uuid.UUID] = set()
    for raw in values:
        for part in str(raw).replace(",", " ").split():
            try:
                pk = uuid.UUID(part)
            except ValueError:
                invalid.append(part[:64])
                continue
            if pk not in seen:
                seen.add(pk)
                ids.append(pk)
    return ids, invalid


def _bulk_deletion(spec: ActionSpec, user: User) -> services.BulkDeletion | None:
    if not spec.deletion:
        return None
    return services.BulkDeletion(actor=user.get_username(), channel=Channel.ADMIN, unlimited=user.is_superuser)


def refusal_beforehand(spec: ActionSpec, task_count: int, *, user: User) -> str | None:
    """Why confirming would be refused now (the deletion breaker's rule), for the confirmation page; None: it
    would not. Checked again, atomically, when confirmed."""
    deletion = _bulk_deletion(spec, user)
    if deletion is None or not task_count:
        return None
    return hooks.deletion_refusal(
        kind=deletion.kind, task_count=task_count, deliberate=True, unlimited=deletion.unlimited
    )


def perform(spec: ActionSpec, ids: list[uuid.UUID], *, user: User, reason: str) -> list[Task]:
    """Apply ``spec`` to every task of ``ids`` in one transaction, or to none (``services.BulkRefused`` says why)."""
    return services.apply_to_all(
        ids,
        lambda task: spec.perform(task, user, reason),
        refusal=spec.skip_reason,
        deletion=_bulk_deletion(spec, user),
    )
