"""Writes of the task domain: the one door through which every change to a task, its outputs and metrics passes.

Each function validates first (typed errors from ``tasks.exceptions``, nothing
written), then changes the task inside a transaction with its row locked; the
history writer (``tasks.history``) records the row in that same transaction and
the Redis mirror follows after commit. By owner:

- ``submission``: create, submit (once per idempotency key), import.
- ``lifecycle``: transition, cancel, edit, soft delete, restore, recover.
- ``attempts``: what a worker writes (claim, lease, progress, outputs, metrics, outcome).
- ``recovery``: lost attempts and lost messages.
- ``removal``: erase for a purge, reinstate from an archive, load a backup's rows.
- ``tally``: the history tally the counters derived from history read (beat's advance; a purge's and an
  unarchive's share).
- ``schedules``: periodic schedules (save, delete, fire) and the lease that lets one beat send.
- ``bulk``: one change to many tasks, all in one transaction or none.
- ``workers``: the worker registry (a worker instance's heartbeat, its stop; forgetting long-gone ones).
"""

from tasks.audit import RECOVERY_ACTOR, WORKER_ACTOR
from tasks.models import METRIC_FIELDS
from tasks.services.attempts import (
    OUTPUT_FIELDS,
    PreparedOutput,
    TimeLimits,
    add_output,
    claim,
    finish_attempt,
    lease_deadline,
    prepare_output,
    record_metrics,
    record_output,
    record_outputs,
    renew_lease,
    report_progress,
    retry_backoff,
    retry_delay,
    time_limits,
)
from tasks.services.base import (
    CREATE_FIELDS,
    EDITABLE_FIELDS,
    TRANSITION_FIELDS,
    check_queue,
    task_queues,
)
from tasks.services.bulk import BulkDeletion, BulkRefused, apply_to_all
from tasks.services.lifecycle import (
    REQUEUE_ON_RECOVER,
    cancel,
    cancel_revoked,
    mark_deleted,
    recover,
    requeue_refusal,
    restore,
    soft_delete,
    transition,
    update_task,
)
from tasks.services.recovery import (
    Dispatch,
    confirm_dispatches,
    current_dispatches,
    publish_due,
    recover_interrupted,
    recover_orphans,
    redispatch,
    redispatch_due,
    redispatch_stale,
    requeue_after_shutdown,
    unconfirmed_dispatches,
)
from tasks.services.removal import erase_tasks, load_rows, reinstate
from tasks.services.schedules import (
    FIRE_SCHEDULE,
    SCHEDULER_LEASE,
    delete_schedule,
    fire_schedule,
    hold_scheduler_lease,
    release_scheduler_lease,
    save_schedule,
    validate_schedule,
)
from tasks.services.submission import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    BatchKeyReused,
    IdempotencyKeyReused,
    checked_submission,
    create_task,
    import_task,
    submit_batch,
    submit_task,
    submit_task_once,
)
from tasks.services.tally import advance_history_tally
from tasks.services.workers import WorkerReport, forget_workers, report_worker, stop_worker

__all__ = [
    "CREATE_FIELDS",
    "EDITABLE_FIELDS",
    "FIRE_SCHEDULE",
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "METRIC_FIELDS",
    "OUTPUT_FIELDS",
    "RECOVERY_ACTOR",
    "REQUEUE_ON_RECOVER",
    "SCHEDULER_LEASE",
    "TRANSITION_FIELDS",
    "WORKER_ACTOR",
    "BatchKeyReused",
    "BulkDeletion",
    "BulkRefused",
    "Dispatch",
    "IdempotencyKeyReused",
    "PreparedOutput",
    "TimeLimits",
    "WorkerReport",
    "add_output",
    "advance_history_tally",
    "apply_to_all",
    "cancel",
    "cancel_revoked",
    "check_queue",
    "checked_submission",
    "claim",
    "confirm_dispatches",
    "create_task",
    "current_dispatches",
    "delete_schedule",
    "erase_tasks",
    "finish_attempt",
    "fire_schedule",
    "forget_workers",
    "hold_scheduler_lease",
    "import_task",
    "lease_deadline",
    "load_rows",
    "mark_deleted",
    "prepare_output",
    "publish_due",
    "record_metrics",
    "record_output",
    "record_outputs",
    "recover",
    "recover_interrupted",
    "recover_orphans",
    "redispatch",
    "redispatch_due",
    "redispatch_stale",
    "reinstate",
    "release_scheduler_lease",
    "renew_lease",
    "report_progress",
    "report_worker",
    "requeue_after_shutdown",
    "requeue_refusal",
    "restore",
    "retry_backoff",
    "retry_delay",
    "save_schedule",
    "soft_delete",
    "stop_worker",
    "submit_batch",
    "submit_task",
    "submit_task_once",
    "task_queues",
    "time_limits",
    "transition",
    "unconfirmed_dispatches",
    "update_task",
    "validate_schedule",
]
