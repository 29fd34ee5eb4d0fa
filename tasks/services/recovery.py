"""Healing lost work: attempts whose worker is gone, and queued tasks whose message is lost.

Each step is a transition or an edit with its history row, by the ``recovery``
channel. Which messages are lost is decided above the domain, by the broker's
epoch and publish receipts (``persistence.dispatch``); here are the writes it
asks for: confirm publishes, and publish again one queued task.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import cast

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tasks.audit import RECOVERY_ACTOR, Channel, audited, format_timestamp
from tasks.ids import celery_id, task_id_of, uuid_or_none
from tasks.models import Task
from tasks.services.base import (
    apply_transition,
    locked_task,
    mark_published,
    publish_on_commit,
    start_ahead,
)
from tasks.states import TaskState

# A task waiting for its start time (``run_at``, a retry's wait) is not lost: its publish, when it is due, is
# crux.dispatch_due's (``publish_due``), never the re-dispatch sweep's, so it is published once and for that reason.
WAITING_FOR_DISPATCH_DUE = {"dispatched_at__isnull": True, "run_after__isnull": False}
# Tasks per confirming UPDATE (each adds one OR term; SQLite caps an expression's depth at 1000).
_CONFIRM_CHUNK = 200


def recover_interrupted(task: Task, *, reason: str, shutdown: bool = False) -> str:
    """Interrupt a locked running task whose worker is gone; requeue or fail it. Returns the outcome.

    An attempt cut short by its worker's ``shutdown`` is not the task's fault: it is requeued whatever attempts
    are left, published at once, with no backoff and no error counted.
    """
    apply_transition(task, TaskState.INTERRUPTED, actor=RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=reason)
    if shutdown or task.attempt_count < task.max_attempts:
        lost = "cut short by the worker's shutdown" if shutdown else f"of {task.max_attempts} was lost"
        apply_transition(
            task,
            TaskState.QUEUED,
            actor=RECOVERY_ACTOR,
            channel=Channel.RECOVERY,
            reason=f"requeued after interruption: attempt {task.attempt_count} {lost}",
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
                reason = (
                    f"lease expired at {task.lease_expires_at:%Y-%m-%d %H:%M:%S}Z: worker {task.worker_id} lost; "
                    f"attempt {task.attempt_count} no longer holds the task and any late write of it is refused"
                )
            counts[recover_interrupted(task, reason=reason)] += 1
            counts["interrupted"] += 1
    return counts


def requeue_after_shutdown(worker_prefix: str, *, grace_seconds: float) -> int:
    """Requeue at once the tasks still running under a worker that is shutting down (its pool has stopped: none
    of them can still write); returns how many. Each gets an ``interrupted`` row naming the shutdown."""
    requeued = 0
    running = Task.objects.filter(state=TaskState.RUNNING, worker_id__startswith=worker_prefix)
    for pk in running.values_list("pk", flat=True):
        with transaction.atomic():
            task = locked_task(pk)
            if task.state != TaskState.RUNNING or not task.worker_id.startswith(worker_prefix):
                continue
            reason = (
                f"interrupted: worker {task.worker_id} shut down before attempt {task.attempt_count} finished "
                f"(shutdown grace period {grace_seconds:g}s)"
            )
            recover_interrupted(task, reason=reason, shutdown=True)
            requeued += 1
    return requeued


@dataclass(frozen=True)
class Dispatch:
    """A queued task's last publish: when, how many so far, the broker epoch that confirmed it ('' = none), and
    the task's priority (lost publishes are published again highest first)."""

    task_id: uuid.UUID
    dispatched_at: datetime | None  # None: never dispatched
    dispatch_count: int
    epoch: str
    priority: int = 0


def unconfirmed_dispatches(epoch: str, *, batch_size: int = 1000) -> Iterator[list[Dispatch]]:
    """Queued tasks whose publish the broker has not confirmed under ``epoch``, in batches (by id)."""
    after: uuid.UUID | None = None
    # Two ranges rather than "<>": both can be read from the partial index on queued tasks' epochs.
    other_epoch = Q(dispatch_epoch__lt=epoch) | Q(dispatch_epoch__gt=epoch)
    while True:
        rows = Task.objects.filter(other_epoch, state=TaskState.QUEUED).exclude(**WAITING_FOR_DISPATCH_DUE)
        if after is not None:
            rows = rows.filter(pk__gt=after)
        batch = [
            Dispatch(*row)
            for row in rows.order_by("pk").values_list(
                "pk", "dispatched_at", "dispatch_count", "dispatch_epoch", "priority"
            )[:batch_size]
        ]
        if not batch:
            return
        yield batch
        after = batch[-1].task_id


def current_dispatches(celery_task_ids: Collection[str]) -> dict[str, Dispatch]:
    """The queued tasks whose latest publish carries one of these Celery task ids: that publish, by its id."""
    # An id that names no UUID is not a Crux publish (another deployment's message on a shared broker).
    task_ids = {pk for celery_task_id in celery_task_ids if (pk := uuid_or_none(task_id_of(celery_task_id)))}
    rows = Task.objects.filter(pk__in=task_ids, state=TaskState.QUEUED).values_list(
        "pk", "dispatched_at", "dispatch_count", "dispatch_epoch", "priority"
    )
    by_publish = {celery_id(row[0], row[2]): Dispatch(*row) for row in rows}
    return {name: found for name, found in by_publish.items() if name in celery_task_ids}


def confirm_dispatches(dispatches: Sequence[Dispatch], epoch: str) -> int:
    """Record that the broker holds these publishes under ``epoch`` (bookkeeping: no history row).

    Only a task still queued from that same publish is marked: one requeued or
    re-published meanwhile keeps waiting for the receipt of its new publish.
    """
    confirmed = 0
    for first in range(0, len(dispatches), _CONFIRM_CHUNK):
        chunk = dispatches[first : first + _CONFIRM_CHUNK]
        same_publish = reduce(or_, (Q(pk=d.task_id, dispatched_at=d.dispatched_at) for d in chunk))
        confirmed += Task.objects.filter(same_publish, state=TaskState.QUEUED).update(dispatch_epoch=epoch)
    return confirmed


def _publish(dispatch: Dispatch, *, reason: str) -> bool:
    """Publish a queued task that is due, in place of the publish ``dispatch`` read; False if it moved on since.

    A compare-and-set on that publish, so two sweeps never both publish it, and never before its start time;
    the history row (channel ``recovery``) says why.
    """
    with transaction.atomic():
        task = locked_task(dispatch.task_id)
        now = timezone.now()
        moved_on = task.state != TaskState.QUEUED or task.dispatched_at != dispatch.dispatched_at
        if moved_on or start_ahead(task, now) is not None:
            return False
        mark_published(task, now)
        with audited(RECOVERY_ACTOR, channel=Channel.RECOVERY, reason=reason):
            task.save()
        publish_on_commit(task)
    return True


def redispatch(dispatch: Dispatch, *, reason: str) -> bool:
    """Publish again a queued task whose message is lost; False if it moved on since ``dispatch`` was read."""
    return _publish(dispatch, reason=f"re-dispatched: {reason}")


def publish_due(*, limit: int = 1000) -> int:
    """Publish the queued tasks whose start time has come (a scheduled ``run_at``, a retry's wait) and that
    were not published for it yet, at most ``limit``, the highest priority first (then the earliest); returns how
    many. In that order their messages reach the broker, which serves each queue by priority.

    Each is marked published (``dispatched_at``) with its history row in the transaction that publishes it on
    commit, so it is published once; a lost message is then the re-dispatch sweep's, as for any publish.
    """
    now = timezone.now()
    due = Task.objects.filter(state=TaskState.QUEUED, dispatched_at__isnull=True, run_after__lte=now)
    published = 0
    by_priority = due.order_by("-priority", "run_after")
    for pk, count, run_after in by_priority.values_list("pk", "dispatch_count", "run_after")[:limit]:
        reason = f"published: its start time {format_timestamp(cast(datetime, run_after))} has come"
        published += _publish(Dispatch(pk, None, count, ""), reason=reason)
    return published


def redispatch_due(dispatch: Dispatch, *, now: datetime, base_seconds: float) -> bool:
    """Whether an unconfirmed publish has waited long enough to be presumed lost.

    ``base_seconds`` after the last dispatch, doubling with each re-dispatch (at
    most 8x), so a broker that keeps refusing publishes is not hammered.
    """
    if dispatch.dispatched_at is None:
        return True
    wait = timedelta(seconds=base_seconds * min(2 ** max(dispatch.dispatch_count - 1, 0), 8))
    return dispatch.dispatched_at <= now - wait


def redispatch_stale(*, base_seconds: float | None = None) -> int:
    """The conservative rule for brokers without an epoch (not Redis): re-publish queued tasks not started
    ``REDISPATCH_AFTER_SECONDS`` after their last dispatch (doubling per re-dispatch, at most 8x).

    On a Redis broker ``persistence.dispatch.redispatch_lost`` re-publishes only
    what is known lost instead: by age, every task of a long backlog would be
    published again and again.
    """
    base = settings.REDISPATCH_AFTER_SECONDS if base_seconds is None else base_seconds
    now = timezone.now()
    candidates = (
        Task.objects.filter(state=TaskState.QUEUED)
        .filter(Q(dispatched_at__lt=now - timedelta(seconds=base)) | Q(dispatched_at__isnull=True))
        .exclude(**WAITING_FOR_DISPATCH_DUE)
    )
    redispatched = 0
    by_priority = candidates.order_by("-priority", "created_at")
    for pk, at, count, epoch in by_priority.values_list("pk", "dispatched_at", "dispatch_count", "dispatch_epoch"):
        dispatch = Dispatch(pk, at, count, epoch)
        if not redispatch_due(dispatch, now=now, base_seconds=base):
            continue
        waited = "never dispatched" if at is None else f"queued since {at:%H:%M:%S}Z without starting"
        redispatched += redispatch(dispatch, reason=waited)
    return redispatched
