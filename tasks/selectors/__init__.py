"""Reads of the task domain: the one door for who may see which task, for lists, searches and counts.

- ``visibility``: which tasks a user may see, and finding one by id.
- ``search``: words in titles and descriptions, through the search index.
- ``lists``: a page of a task list, and a count of its matches bounded to the newest tasks.
- ``figures``: counts by state, role, provider, event; activity per hour and per minute; queue depths; run-time
  percentiles.
- ``workers``: the worker registry: live instances with the tasks their processes run, recently gone ones.
- ``history``: a task's latest rows; verification of the whole audit trail (``verify_audit``).
- ``outputs``: a task's outputs oldest first, all of them or the latest (the admin's live tail, its download).
- ``attempts``: what a task's last attempt left behind (its error, its retry time), for Celery's view of it;
  which worker instances hold running attempts.
"""

from tasks.selectors.attempts import AttemptEnd, CurrentDelivery, attempt_end, current_delivery, running_instances
from tasks.selectors.figures import (
    QueueDepth,
    activity_per_hour,
    count_alive_by,
    count_by_state,
    count_events_since,
    count_history_by_kind,
    count_history_rows,
    count_in_trash,
    count_outputs,
    duration_percentiles,
    finished_per_minute,
    history_since,
    last_recovery_at,
    queue_depths,
)
from tasks.selectors.history import (
    ChainProblem,
    latest_history,
    previous_link,
    verify_audit_chains,
    with_previous_links,
)
from tasks.selectors.lists import TaskPage, newest_window_start, task_page, username_column
from tasks.selectors.outputs import OutputTail, output_tail, task_outputs
from tasks.selectors.search import search_tasks
from tasks.selectors.visibility import (
    find_visible_task,
    may_change,
    may_see,
    may_see_deleted,
    task_list,
    visible_tasks,
)
from tasks.selectors.workers import (
    LiveWorker,
    count_live_workers,
    count_silent_workers,
    gone_workers,
    live_workers,
    live_workers_by_queue,
)

__all__ = [
    "AttemptEnd",
    "ChainProblem",
    "CurrentDelivery",
    "LiveWorker",
    "OutputTail",
    "QueueDepth",
    "TaskPage",
    "activity_per_hour",
    "attempt_end",
    "count_alive_by",
    "count_by_state",
    "count_events_since",
    "count_history_by_kind",
    "count_history_rows",
    "count_in_trash",
    "count_live_workers",
    "count_outputs",
    "count_silent_workers",
    "current_delivery",
    "duration_percentiles",
    "find_visible_task",
    "finished_per_minute",
    "gone_workers",
    "history_since",
    "last_recovery_at",
    "latest_history",
    "live_workers",
    "live_workers_by_queue",
    "may_change",
    "may_see",
    "may_see_deleted",
    "newest_window_start",
    "output_tail",
    "previous_link",
    "queue_depths",
    "running_instances",
    "search_tasks",
    "task_list",
    "task_outputs",
    "task_page",
    "username_column",
    "verify_audit_chains",
    "visible_tasks",
    "with_previous_links",
]
