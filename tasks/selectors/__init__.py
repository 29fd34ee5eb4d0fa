"""Reads of the task domain: the one door for who may see which task, for lists, searches and counts.

- ``visibility``: which tasks a user may see, and finding one by id.
- ``search``: words in titles and descriptions, through the search index.
- ``figures``: counts by state, role, provider, event; activity per hour.
- ``history``: a task's latest rows; verification of the whole audit trail (``verify_audit``).
- ``attempts``: what a task's last attempt left behind (its error, its retry time), for Celery's view of it;
  which worker instances hold running attempts.
"""

from tasks.selectors.attempts import AttemptEnd, attempt_end, running_instances
from tasks.selectors.figures import (
    activity_per_hour,
    count_alive_by,
    count_by_state,
    count_events_since,
    count_history_by_kind,
    count_history_rows,
    count_in_trash,
    count_outputs,
    last_recovery_at,
)
from tasks.selectors.history import ChainProblem, latest_history, verify_audit_chains
from tasks.selectors.search import search_tasks
from tasks.selectors.visibility import (
    find_visible_task,
    may_change,
    may_see,
    may_see_deleted,
    task_list,
    visible_tasks,
)

__all__ = [
    "AttemptEnd",
    "ChainProblem",
    "activity_per_hour",
    "attempt_end",
    "count_alive_by",
    "count_by_state",
    "count_events_since",
    "count_history_by_kind",
    "count_history_rows",
    "count_in_trash",
    "count_outputs",
    "find_visible_task",
    "last_recovery_at",
    "latest_history",
    "may_change",
    "may_see",
    "may_see_deleted",
    "running_instances",
    "search_tasks",
    "task_list",
    "verify_audit_chains",
    "visible_tasks",
]
