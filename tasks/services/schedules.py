"""Periodic schedules: saving one (and the beat entry derived from it), deleting one, firing one, and the lease that
lets exactly one beat send.

A ``TaskSchedule`` is what staff edit; its django-celery-beat ``PeriodicTask`` is derived here on every save and
only ever names ``crux.fire_schedule`` with the schedule's id, so beat cannot be pointed at another Celery task.
A firing submits a normal task through ``submit_task_once``: the schedule is its actor, ``Channel.SCHEDULE`` its
channel, the schedule's id is in its metadata, and a redelivered firing message never submits a second task.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.models import SchedulerLease, Task, TaskSchedule
from tasks.services.submission import checked_submission, submit_task_once

FIRE_SCHEDULE = "crux.fire_schedule"
# The beat entry of schedule 7 is "crux.schedule:7": beside the housekeeping entries of CELERY_BEAT_SCHEDULE.
PERIODIC_TASK_PREFIX = "crux.schedule:"
# Task options a schedule may set; empty ones leave the handler's (``@options``), then the model's default.
OPTION_FIELDS = ("queue", "priority", "max_attempts", "soft_time_limit", "time_limit")
SCHEDULER_LEASE = "beat"


def schedule_actor(schedule: TaskSchedule) -> str:
    return f"schedule:{schedule.name}"


def task_fields(schedule: TaskSchedule) -> dict[str, Any]:
    """The fields of the task each firing of ``schedule`` submits."""
    fields: dict[str, Any] = {
        "title": schedule.title,
        "handler": schedule.handler,
        "request_payload": schedule.payload,
        "metadata": {"schedule_id": schedule.pk, "schedule": schedule.name},
    }
    for name in OPTION_FIELDS:
        value = getattr(schedule, name)
        if value is not None and value != "":
            fields[name] = value
    return fields


def validate_schedule(schedule: TaskSchedule) -> None:
    """Refuse (InvalidTaskData, messages by field) a schedule whose firings would be refused, before it is saved.

    The task a firing would submit is checked as a submission is (``checked_submission``): the handler
    registered, the payload against its declaration, the options in range, the queue known.
    """
    errors: dict[str, Any] = {}
    try:
        schedule.full_clean(exclude=["owner", "periodic_task"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if not errors:
        try:
            checked_submission(None, task_fields(schedule))
        except InvalidTaskData as exc:
            errors.update({"payload" if name == "request_payload" else name: v for name, v in exc.errors.items()})
    if errors:
        raise InvalidTaskData(errors)


def save_schedule(schedule: TaskSchedule) -> TaskSchedule:
    """Validate and save ``schedule`` and, in the same transaction, the beat entry derived from it."""
    validate_schedule(schedule)
    with transaction.atomic():
        schedule.save()
        periodic = schedule.periodic_task or PeriodicTask()
        periodic.name = f"{PERIODIC_TASK_PREFIX}{schedule.pk}"
        periodic.task = FIRE_SCHEDULE
        periodic.kwargs = json.dumps({"schedule_id": schedule.pk})
        periodic.interval, periodic.crontab = schedule.interval, schedule.crontab
        periodic.enabled = schedule.enabled
        periodic.description = f"Crux schedule {schedule.name!r}: {schedule.title}"
        periodic.save()
        if schedule.periodic_task_id != periodic.pk:
            schedule.periodic_task = periodic
            schedule.save(update_fields=["periodic_task"])
    return schedule


def delete_schedule(schedule: TaskSchedule) -> None:
    """Delete ``schedule`` and its beat entry; the tasks it submitted stay (they name it in metadata and history)."""
    with transaction.atomic():
        periodic = schedule.periodic_task
        schedule.delete()
        if periodic is not None:
            periodic.delete()


def fire_schedule(schedule_id: int, firing_id: str | None = None) -> tuple[Task | None, bool]:
    """Submit the task of one firing; returns (task, created).

    Nothing is submitted for a schedule disabled or deleted since beat sent the firing (None, False). The same
    ``firing_id`` (the Celery message id, kept on redelivery) returns the task already submitted.
    """
    schedule = TaskSchedule.objects.select_related("owner").filter(pk=schedule_id, enabled=True).first()
    if schedule is None:
        return None, False
    return submit_task_once(
        idempotency_key=f"schedule:{schedule.pk}:{firing_id}" if firing_id else None,
        owner=schedule.owner,
        actor=schedule_actor(schedule),
        channel=Channel.SCHEDULE,
        reason=f"fired by schedule {schedule.name} (#{schedule.pk})",
        **task_fields(schedule),
    )


def hold_scheduler_lease(holder: str, seconds: float) -> bool:
    """Take or renew the scheduler lease for ``holder`` for ``seconds``; False while another holder's is unexpired.

    One compare-and-set UPDATE timed by the database's clock, so beats on different machines agree on expiry.
    """
    now = timezone.now()
    renewed = SchedulerLease.objects.filter(Q(holder=holder) | Q(expires_at__lt=Now()), name=SCHEDULER_LEASE).update(
        holder=holder,
        expires_at=Now() + timedelta(seconds=seconds),
        acquired_at=Case(When(holder=holder, then=F("acquired_at")), default=Value(now)),
    )
    if renewed:
        return True
    try:
        with transaction.atomic():
            SchedulerLease.objects.create(
                name=SCHEDULER_LEASE, holder=holder, expires_at=now + timedelta(seconds=seconds), acquired_at=now
            )
    except IntegrityError:
        return False
    return True


def release_scheduler_lease(holder: str) -> None:
    """Give the lease up (a beat stopping): a standby takes over at its next tick instead of after the expiry."""
    SchedulerLease.objects.filter(name=SCHEDULER_LEASE, holder=holder).update(expires_at=Now() - timedelta(days=1))
