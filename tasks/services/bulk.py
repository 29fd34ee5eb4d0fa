"""One change applied to every selected task in one transaction, or to none: a bulk action never half-applies.

Every task is locked first (in id order, so two bulks never deadlock each other) and must still be eligible;
any refusal (a task that changed or vanished since it was confirmed, a deletion guard's refusal, a database
error) rolls all of it back. A bulk soft delete is admitted by the deletion guards once, before anything is
written, as one deliberate operation of N tasks (``tasks.hooks.admit_deletion``); the tasks are checked before
it, so a selection already stale is refused without being counted as a deletion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from django.db import DatabaseError, transaction

from tasks import hooks
from tasks.exceptions import Conflict, TaskError
from tasks.models import Task


class BulkRefused(Conflict):
    """Nothing was changed; the message says which task or which guard refused, and why."""


@dataclass(frozen=True)
class BulkDeletion:
    """A bulk soft delete confirmed by staff holding the permission; ``unlimited`` when by a superuser."""

    actor: str
    channel: str
    unlimited: bool
    kind: str = "soft_delete"


def apply_to_all(
    task_ids: Sequence[UUID],
    change: Callable[[Task], Task],
    *,
    refusal: Callable[[Task], str | None],
    deletion: BulkDeletion | None = None,
) -> list[Task]:
    """``change`` every task of ``task_ids`` (each eligible: ``refusal`` None), all in one transaction; else
    BulkRefused and nothing written. ``change`` is a service call, which writes each task's history row."""
    if not task_ids:
        return []
    if deletion is not None:
        # Checked before the deletion is admitted (counted), and again under the locks below.
        _check_all(Task.objects.in_bulk(task_ids), task_ids, refusal)
        try:
            hooks.admit_deletion(
                kind=deletion.kind,
                actor=deletion.actor,
                channel=deletion.channel,
                task_count=len(task_ids),
                deliberate=True,
                unlimited=deletion.unlimited,
            )
        except TaskError as exc:
            raise BulkRefused(str(exc)) from exc
    try:
        with transaction.atomic():
            locked = Task.objects.select_for_update().filter(pk__in=task_ids).order_by("pk").in_bulk()
            _check_all(locked, task_ids, refusal)
            return [change(locked[pk]) for pk in task_ids]
    except BulkRefused:
        raise
    except TaskError as exc:
        raise BulkRefused(str(exc)) from exc
    except DatabaseError as exc:
        raise BulkRefused(f"the database refused the change: {str(exc).strip().splitlines()[0]}") from exc


def _check_all(tasks: dict[UUID, Task], task_ids: Sequence[UUID], refusal: Callable[[Task], str | None]) -> None:
    for pk in task_ids:
        task = tasks.get(pk)
        if task is None:
            raise BulkRefused(f"task {pk} no longer exists")
        why = refusal(task)
        if why:
            raise BulkRefused(f"task {pk} changed since it was selected: {why}")
