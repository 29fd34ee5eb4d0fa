"""Celery's result rows in the admin: read-only, each delivery of a task linked to the task.

Celery's results now hold a row only for a delivery that failed, waited for a retry or ran nothing: a delivery that
completed its task has none (``tasks.tasks.ResultBackend`` derives Celery's view of it from the task row), so the
page says so rather than look like a list of every delivery. Nobody edits or deletes these rows here: they are
Celery's record of its deliveries, kept for good (``result_expires=None``), which ``verify_audit`` and ``locate`` read
as a witness of a task. Crux groups no tasks, so Celery's group results are not shown.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django_celery_results import admin as results_admin
from django_celery_results.models import GroupResult, TaskResult

from tasks.admin.base import ReadOnlyAdmin
from tasks.dispatch import EXECUTE_TASK
from tasks.ids import task_id_of, uuid_or_none

for _replaced in (TaskResult, GroupResult):
    if admin.site.is_registered(_replaced):
        admin.site.unregister(_replaced)


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin, results_admin.TaskResultAdmin):
    """django-celery-results' page of result rows, read-only, with the task each delivery ran."""

    list_display = ("task_id", "crux_task", "task_name", "date_done", "status", "worker")

    @admin.display(description="task")
    def crux_task(self, row: TaskResult) -> str:
        """A link to the task a delivery of ``crux.execute_task`` ran (its Celery id: ``<task id>.<publish>``)."""
        task_id = uuid_or_none(task_id_of(row.task_id)) if row.task_name == EXECUTE_TASK else None
        if task_id is None:
            return "-"
        return format_html(
            '<a href="{}"><code>{}</code></a>', reverse("admin:tasks_task_change", args=[task_id]), str(task_id)[:8]
        )
