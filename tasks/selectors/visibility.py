"""Who sees which task, and who may change it: the one place the rules live.

A user sees their own tasks, staff see all; another user's task is "not found",
never "forbidden", so ids are not confirmed. Soft-deleted tasks are seen only by
those who may manage the trash: staff, or holders of ``tasks.restore_task``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from tasks.exceptions import TaskNotFound
from tasks.ids import TaskId, parse_task_id
from tasks.models import Task, TaskQuerySet

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser, User

# Who asks whether they may see a task: a request's user, signed in or not (the rule reads is_staff, has_perm, pk).
Viewer: TypeAlias = "AbstractUser | AnonymousUser"


def may_see_deleted(user: Viewer) -> bool:
    return bool(user.is_staff or user.has_perm("tasks.restore_task"))


def may_see(user: Viewer, *, owner_id: int | None, deleted: bool = False) -> bool:
    """Whether ``user`` may see a task of ``owner_id`` (in the trash if ``deleted``)."""
    if deleted and not may_see_deleted(user):
        return False
    return bool(user.is_staff or (owner_id is not None and owner_id == user.pk))


def may_change(user: Viewer, task: Task, *, perm: str) -> bool:
    """Whether ``user`` may change ``task`` (cancel it, add an output): its owner, or a holder of ``perm``."""
    return (task.owner_id is not None and task.owner_id == user.pk) or user.has_perm(perm)


def visible_tasks(user: User, *, include_deleted: bool | None = None) -> TaskQuerySet:
    """Tasks ``user`` may see; deleted ones only if asked for (default: if they may see the trash)."""
    tasks = Task.objects.all()
    if not user.is_staff:
        tasks = tasks.filter(owner=user)
    if include_deleted is None:
        include_deleted = may_see_deleted(user)
    return tasks if include_deleted else tasks.alive()


def task_list(user: User) -> TaskQuerySet:
    """Every task ``user`` may see, the trash included, newest first: what list filters narrow."""
    return visible_tasks(user, include_deleted=True).order_by("-created_at", "-pk")


def find_visible_task(
    user: User, task_id: TaskId, *, include_deleted: bool | None = None, field: str = "task_id"
) -> Task:
    """The task if ``user`` may see it; a malformed id is InvalidTaskData naming ``field``, else TaskNotFound."""
    pk = parse_task_id(task_id, field=field)
    task = (
        visible_tasks(user, include_deleted=include_deleted).select_related("owner", "deleted_by").filter(pk=pk).first()
    )
    if task is None:
        raise TaskNotFound(pk)
    return task
