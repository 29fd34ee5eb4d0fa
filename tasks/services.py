"""Writes of the task domain: the one door through which every task change passes.

Each function validates first (typed errors, nothing written), then changes the
task inside a transaction with the row locked; the audit signals write the
history row in that same transaction and the mirror is refreshed after commit.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

from tasks.audit import Channel, actor_label, audited, canonical_json
from tasks.exceptions import InvalidTaskData, StaleState, TaskError, TaskNotFound
from tasks.models import HistoryPurgeGrant, IdempotencyKey, Task, TaskHistory, TaskMetrics, TaskOutput
from tasks.redaction import redact_submission, redact_text
from tasks.registry import registered_names
from tasks.states import TERMINAL_STATES, TaskState, check_state, check_transition

logger = logging.getLogger(__name__)

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


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """``value`` as a UUID, or None if it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def parse_task_id(task_id: Any) -> uuid.UUID:
    """The task id as a UUID, or InvalidTaskData naming the ``task_id`` field."""
    pk = uuid_or_none(task_id)
    if pk is None:
        raise InvalidTaskData({"task_id": [f"{task_id!r} is not a valid UUID."]})
    return pk


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


# Foreign keys are left to the database's constraints: Django's check of them is a query per key on every save.
_UNCHECKED_RELATIONS = tuple(f.name for f in Task._meta.concrete_fields if f.is_relation)


def _validate(task: Task) -> None:
    try:
        task.full_clean(exclude=_UNCHECKED_RELATIONS, validate_unique=False)
    except ValidationError as exc:
        raise InvalidTaskData(exc.message_dict) from None


def _check_handler(fields: dict[str, Any]) -> None:
    handler = fields.get("handler", Task._meta.get_field("handler").default)
    if handler not in registered_names():
        raise InvalidTaskData(
            {"handler": [f"Unknown handler {handler!r}; registered: {', '.join(registered_names())}."]}
        )


def create_task(
    *,
    owner: Any,
    actor: Any,
    channel: str,
    reason: str = "created",
    **fields: Any,
) -> Task:
    """Create a pending task (not yet dispatched) and its first history row; credentials are redacted first."""
    _refuse_unknown(fields, CREATE_FIELDS)
    fields = redact_submission(fields)
    task = Task(owner=owner, **fields)
    _validate(task)
    with audited(actor, channel=channel, reason=reason):
        task.save()
    return task


def submit_task(
    *,
    owner: Any,
    actor: Any,
    channel: str,
    reason: str = "submitted",
    **fields: Any,
) -> Task:
    """Create a queued task and publish it to Celery once the creation has committed.

    SQL is the outbox: if the publish is lost (crash after commit, broker down or
    flushed), the re-dispatch sweep publishes the task again. Credentials in the
    submitted values are redacted before anything is written (every channel).
    """
    _refuse_unknown(fields, CREATE_FIELDS)
    fields = redact_submission(fields)
    _check_handler(fields)
    now = timezone.now()
    task = Task(owner=owner, state=TaskState.QUEUED, dispatched_at=now, dispatch_count=1, **fields)
    _validate(task)
    with transaction.atomic():
        with audited(actor, channel=channel, reason=reason):
            task.save()
        _publish_on_commit(task.pk)
    return task


def _publish_on_commit(task_id: uuid.UUID) -> None:
    from tasks.dispatch import publish

    transaction.on_commit(partial(publish, task_id))


def _apply(
    task: Task,
    target: str,
    *,
    actor: Any,
    channel: str,
    reason: str,
    details: dict[str, Any] | None = None,
    **updates: Any,
) -> Task:
    """Move a locked task to ``target``; the single place where a transition is applied."""
    check_transition(task.state, target)
    now = timezone.now()
    task.state = target
    for name, value in updates.items():
        setattr(task, name, value)
    if target == TaskState.RUNNING:
        task.started_at = now
    if target in TERMINAL_STATES:
        task.completed_at = now
        task.lease_expires_at = None
    elif task.completed_at is not None:
        task.completed_at = None
    if target == TaskState.FAILED:
        task.error_count += 1
    if target == TaskState.QUEUED:
        task.dispatched_at, task.dispatch_count = now, task.dispatch_count + 1
        task.worker_id, task.lease_expires_at = "", None
    _validate(task)
    with audited(actor, channel=channel, reason=reason, details=details):
        task.save()
    if target == TaskState.QUEUED:
        _publish_on_commit(task.pk)
    return task


def _check_expected(task: Task, expected_state: str | None, expected_attempt: int | None) -> None:
    if expected_state is not None and task.state != check_state(expected_state):
        raise StaleState(f"task {task.pk} is {task.state}, not {expected_state}")
    if expected_attempt is not None and task.attempt_count != expected_attempt:
        raise StaleState(
            f"task {task.pk} is at attempt {task.attempt_count}, not {expected_attempt}", field="attempt_count"
        )


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
        _check_expected(task, expected_state, expected_attempt)
        return _apply(task, target, actor=actor, channel=channel, reason=reason, details=details, **updates)


def cancel(task_id: Any, *, actor: Any, channel: str, reason: str) -> Task:
    """Cancel a task that has not finished, and stop its Celery execution after commit."""
    with transaction.atomic():
        task = _locked(task_id)
        was = task.state
        _apply(task, TaskState.CANCELLED, actor=actor, channel=channel, reason=reason)
        if was in (TaskState.QUEUED, TaskState.RUNNING):
            from tasks.dispatch import revoke

            transaction.on_commit(partial(revoke, task.pk, terminate=was == TaskState.RUNNING))
    return task


WORKER_ACTOR = "system:worker"
RECOVERY_ACTOR = "system:recovery"


def lease_deadline() -> Any:
    return timezone.now() + timedelta(seconds=settings.TASK_LEASE_SECONDS)


def claim(task_id: Any, *, worker_id: str) -> Task | None:
    """Move a queued task to running for a new attempt, or return None (duplicate delivery).

    A compare-and-set under the row lock: a delivery of a task that is already
    running or finished does nothing, so a task never runs twice at once.
    """
    with transaction.atomic():
        try:
            task = _locked(task_id)
        except TaskNotFound:
            logger.warning("delivery of unknown task %s ignored", task_id)
            return None
        if task.state != TaskState.QUEUED:
            logger.info("duplicate delivery of task %s ignored: it is %s", task.pk, task.state)
            return None
        if task.is_deleted:
            _apply(
                task,
                TaskState.CANCELLED,
                actor=WORKER_ACTOR,
                channel=Channel.WORKER,
                reason="soft-deleted before it started; not run",
            )
            return None
        return _apply(
            task,
            TaskState.RUNNING,
            actor=WORKER_ACTOR,
            channel=Channel.WORKER,
            reason=f"claimed by {worker_id} for attempt {task.attempt_count + 1} of {task.max_attempts}",
            attempt_count=task.attempt_count + 1,
            worker_id=worker_id,
            lease_expires_at=lease_deadline(),
            heartbeat_at=timezone.now(),
            progress=0.0,
            current_phase="",
        )


def finish_attempt(
    task_id: Any,
    *,
    attempt: int,
    worker_id: str,
    result: Any = None,
    error: str = "",
    metrics: dict[str, Any] | None = None,
) -> Task | None:
    """Record the outcome of an attempt: completed with ``result``, or failed with ``error``.

    Compare-and-set on (running, attempt, worker): if the task was cancelled or
    recovered meanwhile, the outcome is discarded (and logged), never applied twice.
    ``metrics`` (TaskMetrics fields) are written in the same transaction, so an
    outcome and its figures commit together, or neither does.
    """
    with transaction.atomic():
        task = _locked(task_id)
        if (task.state, task.attempt_count, task.worker_id) != (TaskState.RUNNING, attempt, worker_id):
            logger.warning(
                "outcome of task %s attempt %s discarded: it is now %s at attempt %s",
                task.pk,
                attempt,
                task.state,
                task.attempt_count,
            )
            return None
        if metrics:
            TaskMetrics.objects.update_or_create(task_id=task.pk, defaults=metrics)
        if error:
            return _apply(
                task,
                TaskState.FAILED,
                actor=WORKER_ACTOR,
                channel=Channel.WORKER,
                reason=f"handler raised on attempt {attempt}",
                last_error=error,
            )
        return _apply(
            task,
            TaskState.COMPLETED,
            actor=WORKER_ACTOR,
            channel=Channel.WORKER,
            reason=f"completed on attempt {attempt}",
            result=result,
            progress=1.0,
        )


def _live_attempt(task_id: Any, attempt: int, worker_id: str) -> Any:
    return Task.objects.filter(pk=task_id, state=TaskState.RUNNING, attempt_count=attempt, worker_id=worker_id)


def renew_lease(task_id: Any, *, attempt: int, worker_id: str) -> bool:
    """Extend the lease of a running attempt; False means the attempt lost its claim."""
    now = timezone.now()
    return bool(_live_attempt(task_id, attempt, worker_id).update(lease_expires_at=lease_deadline(), heartbeat_at=now))


def report_progress(task_id: Any, *, attempt: int, worker_id: str, progress: float, phase: str | None = None) -> bool:
    """Live progress of a running attempt (no history row: it is telemetry, mirrored to Redis)."""
    if not 0.0 <= progress <= 1.0:
        raise InvalidTaskData({"progress": ["Ensure this value is between 0 and 1."]})
    fields: dict[str, Any] = {"progress": progress, "updated_at": timezone.now()}
    if phase is not None:
        fields["current_phase"] = phase[:100]
    updated = _live_attempt(task_id, attempt, worker_id).update(**fields)
    if updated:
        from persistence.mirror import MIRRORED_FIELDS, publish, snapshot

        values = Task.objects.filter(pk=task_id).values(*MIRRORED_FIELDS).first()
        if values is not None:
            publish(snapshot(values))
    return bool(updated)


def recover_interrupted(task: Task, *, reason: str) -> str:
    """Interrupt a locked running task whose worker is gone; requeue or fail it. Returns the outcome."""
    _apply(task, TaskState.INTERRUPTED, actor=RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=reason)
    if task.attempt_count < task.max_attempts:
        _apply(
            task,
            TaskState.QUEUED,
            actor=RECOVERY_ACTOR,
            channel=Channel.RECOVERY,
            reason=f"requeued after interruption: attempt {task.attempt_count} of {task.max_attempts} was lost",
        )
        return "requeued"
    _apply(
        task,
        TaskState.FAILED,
        actor=RECOVERY_ACTOR,
        channel=Channel.RECOVERY,
        reason=f"attempt limit reached: {task.attempt_count} of {task.max_attempts} attempts lost their worker",
        last_error=f"recovery: worker lost on each of {task.attempt_count} attempts ({reason})",
    )
    return "failed"


def recover_orphans(*, worker_prefix: str | None = None) -> dict[str, int]:
    """Interrupt running tasks whose lease expired (or that belonged to a restarted worker).

    Each becomes interrupted, then queued again until its attempt limit, else
    failed with a recovery reason; every step writes a history row.
    """
    now = timezone.now()
    expired = Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    if worker_prefix:
        expired |= Q(worker_id__startswith=worker_prefix)
    counts = {"interrupted": 0, "requeued": 0, "failed": 0}
    for pk in Task.objects.filter(Q(state=TaskState.RUNNING) & expired).values_list("pk", flat=True):
        with transaction.atomic():
            task = _locked(pk)
            restarted = bool(worker_prefix) and task.worker_id.startswith(worker_prefix)
            lost = task.lease_expires_at is None or task.lease_expires_at < timezone.now()
            if task.state != TaskState.RUNNING or not (restarted or lost):
                continue
            if restarted:
                reason = f"worker {task.worker_id} restarted while running attempt {task.attempt_count}"
            else:
                reason = f"lease expired at {task.lease_expires_at:%Y-%m-%d %H:%M:%S}Z: worker {task.worker_id} lost"
            counts[recover_interrupted(task, reason=reason)] += 1
            counts["interrupted"] += 1
    return counts


def redispatch_stale(*, base_seconds: float | None = None) -> int:
    """Publish again queued tasks that have not started: their message may be lost.

    Waits ``REDISPATCH_AFTER_SECONDS`` after the last dispatch, doubling with each
    re-dispatch (at most 8x), so a long backlog is not flooded with copies.
    """
    base = settings.REDISPATCH_AFTER_SECONDS if base_seconds is None else base_seconds
    now = timezone.now()
    candidates = Task.objects.filter(state=TaskState.QUEUED).filter(
        Q(dispatched_at__lt=now - timedelta(seconds=base)) | Q(dispatched_at__isnull=True)
    )
    redispatched = 0
    for pk, count, at in candidates.values_list("pk", "dispatch_count", "dispatched_at"):
        wait = timedelta(seconds=base * min(2 ** max(count - 1, 0), 8))
        if at is not None and at > now - wait:
            continue
        with transaction.atomic():
            task = _locked(pk)
            if task.state != TaskState.QUEUED or task.dispatched_at != at:
                continue
            waited = "never dispatched" if at is None else f"queued since {at:%H:%M:%S}Z without starting"
            task.dispatched_at, task.dispatch_count = now, task.dispatch_count + 1
            with audited(RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=f"re-dispatched: {waited}"):
                task.save()
            _publish_on_commit(task.pk)
            redispatched += 1
    return redispatched


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
    """Flag a task deleted (who, when, why); it stays restorable until a retention purge.

    Each soft delete is first admitted by the deletion-spike monitor, which
    refuses it (DeletionsSuspended) while the breaker is tripped.
    """
    from retention.monitor import admit_deletion

    pk = parse_task_id(task_id)
    current = Task.objects.filter(pk=pk).values("deleted_at").first()
    if current is None:
        raise TaskNotFound(pk)
    if current["deleted_at"] is not None:
        raise TaskError(f"task {pk} is already deleted", field="task_id")
    admit_deletion(kind="soft_delete", actor=actor_label(user)[0], channel=channel, task_id=pk)
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


# --- Used by the REST API (and any channel that takes submissions from clients).

IDEMPOTENCY_KEY_MAX_LENGTH = 255
OUTPUT_FIELDS = frozenset({"output_type", "content", "file_path", "file_size", "mime_type", "commit_hash", "branch"})
# Recovering a task in these states requeues it; in any other state it only re-mirrors it.
REQUEUE_ON_RECOVER = frozenset({TaskState.INTERRUPTED, TaskState.FAILED})


class IdempotencyKeyReused(StaleState):
    """The key already names another request's task: a conflict (409), never a second task."""

    field = "Idempotency-Key"


def submit_task_once(
    *,
    idempotency_key: str | None,
    owner: Any,
    actor: Any,
    channel: str,
    reason: str = "submitted",
    **fields: Any,
) -> tuple[Task, bool]:
    """Submit a task with credentials redacted; returns (task, created).

    With an ``idempotency_key`` (scoped to the owner), a retry of the same request
    returns the task the first one created, never a second task; the same key with
    a different request is refused. The key row commits with the task, so a
    concurrent duplicate fails on the unique constraint and replays the winner.
    """
    fields = redact_submission(fields)
    if idempotency_key is None:
        return submit_task(owner=owner, actor=actor, channel=channel, reason=reason, **fields), True
    _check_idempotency_key(idempotency_key)
    fingerprint = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
    replayed = _replay(owner, idempotency_key, fingerprint)
    if replayed is not None:
        return replayed, False
    try:
        with transaction.atomic():
            task = submit_task(owner=owner, actor=actor, channel=channel, reason=reason, **fields)
            IdempotencyKey.objects.create(owner=owner, key=idempotency_key, task=task, fingerprint=fingerprint)
    except IntegrityError:
        replayed = _replay(owner, idempotency_key, fingerprint)
        if replayed is None:
            raise
        return replayed, False
    return task, True


def _check_idempotency_key(key: str) -> None:
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not (key.isascii() and key.isprintable()):
        raise InvalidTaskData(
            {"Idempotency-Key": [f"Use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, e.g. a UUID."]}
        )


def _replay(owner: Any, key: str, fingerprint: str) -> Task | None:
    entry = IdempotencyKey.objects.select_related("task").filter(owner=owner, key=key).first()
    if entry is None:
        return None
    if entry.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"This key was already used for a different request (task {entry.task_id}); use a new key for a new task."
        )
    return entry.task


def add_output(task_id: Any, **fields: Any) -> TaskOutput:
    """Append an output to a task that is not deleted; credentials in its text are masked."""
    _refuse_unknown(fields, OUTPUT_FIELDS)
    with transaction.atomic():
        task = _locked(task_id)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is deleted: restore it before adding outputs", field="task_id")
        output = TaskOutput(task=task, **fields)
        output.content = redact_text(output.content)
        try:
            output.full_clean(exclude=["task"])
        except ValidationError as exc:
            raise InvalidTaskData(exc.message_dict) from None
        output.save()
    return output


def recover_task(task_id: Any, *, actor: Any, channel: str, reason: str) -> tuple[Task, str]:
    """Recover one task from SQL: requeue it if interrupted or failed, else rewrite its mirror entry.

    Returns (task, "requeued" | "remirrored" | "mirror_failed"). A requeue is a
    transition with its history row (the mirror follows after commit); a
    re-mirror changes nothing in SQL.
    """
    with transaction.atomic():
        task = _locked(task_id)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is deleted: restore it before recovering it", field="task_id")
        if task.state in REQUEUE_ON_RECOVER:
            _apply(task, TaskState.QUEUED, actor=actor, channel=channel, reason=reason)
            return task, "requeued"
    from persistence import mirror

    return task, ("remirrored" if mirror.publish(mirror.snapshot_of(task)) else "mirror_failed")
