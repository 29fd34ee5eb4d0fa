"""The task app's admin: tasks (with actions, trash and timeline), their history, CLI sessions, preferences,
periodic schedules, the Workers page, Celery's result rows.

Importing the package registers every model admin (Django's admin autodiscovery imports it).
"""

from tasks.admin import celery_results, history_admin, schedule_admin, session_admin, task_admin, workers
from tasks.admin.base import ReadOnlyAdmin

__all__ = [
    "ReadOnlyAdmin",
    "celery_results",
    "history_admin",
    "schedule_admin",
    "session_admin",
    "task_admin",
    "workers",
]
