"""Healing lost work: attempts whose worker is gone, and queued tasks whose message may be lost.

Each step is a transition with its history row, by the ``recovery`` channel.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tasks.audit import Channel, audited
from tasks.models import Task
from tasks.services.base import RECOVERY_ACTOR, apply_transition, locked_task, publish_on_commit
from tasks.states import TaskState


def recover_interrupted(task: Task, *, reason: str) -> str:
    """Interrupt a locked running task whose worker is gone; requeue or fail it. Returns the outcome."""
    apply_transition(task, TaskState.INTERRUPTED, actor=RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=reason)
    if task.attempt_count < task.max_attempts:
        apply_transition(
            task,
            TaskState.QUEUED,
            actor=RECOVERY_ACTOR,
            channel=Channel.RECOVERY,
            reason=f"requeued after interruption: attempt {task.attempt_count} of {task.max_attempts} was lost",
        )
        return "requeued"
    apply_transition(
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
            task = locked_task(pk)
            restarted = bool(worker_prefix) and task.worker_id.startswith(worker_prefix or "")
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
            task = locked_task(pk)
            if task.state != TaskState.QUEUED or task.dispatched_at != at:
                continue
            waited = "never dispatched" if at is None else f"queued since {at:%H:%M:%S}Z without starting"
            task.dispatched_at, task.dispatch_count = now, task.dispatch_count + 1
            with audited(RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=f"re-dispatched: {waited}"):
                task.save()
            publish_on_commit(task.pk)
            redispatched += 1
    return redispatched
