"""Creating tasks: a pending task, a submission published to a worker, an idempotent retry, a legacy import."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from tasks.audit import Actor, audited, canonical_json, format_timestamp
from tasks.exceptions import InvalidTaskData, StaleState
from tasks.models import IdempotencyKey, Task
from tasks.redaction import redact_submission, redact_text
from tasks.registry import registered_names
from tasks.services.base import (
    CREATE_FIELDS,
    check_queue,
    mark_published,
    publish_on_commit,
    refuse_unknown,
    validate_task,
    with_handler_defaults,
)
from tasks.states import TaskState

if TYPE_CHECKING:
    from django.contrib.auth.models import User

IDEMPOTENCY_KEY_MAX_LENGTH = 255


class IdempotencyKeyReused(StaleState):
    """The key already names another request's task: a conflict (409), never a second task."""

    field = "Idempotency-Key"


def _check_handler(fields: dict[str, Any]) -> None:
    handler = fields.get("handler", Task._meta.get_field("handler").default)
    if handler not in registered_names():
        raise InvalidTaskData(
            {"handler": [f"Unknown handler {handler!r}; registered: {', '.join(registered_names())}."]}
        )


def checked_submission(owner: User | None, fields: dict[str, Any], **preset: Any) -> Task:
    """The unsaved task a submission of ``fields`` makes, checked as every door checks one (the API, the admin's
    add form, a schedule when it is saved, ``create_task`` and ``submit_task``): settable fields only, a registered
    handler, its ``@options`` for what the fields leave out, the model's rules, the payload against the handler's
    declaration, a known queue. InvalidTaskData, by field, otherwise; nothing is written. ``preset``: what the
    caller decides itself (the state, the start time)."""
    refuse_unknown(fields, CREATE_FIELDS)
    _check_handler(fields)
    task = Task(owner=owner, **preset, **with_handler_defaults(fields))
    validate_task(task, payload=True)
    check_queue(task)
    return task


def create_task(
    *,
    owner: User | None,
    actor: Actor,
    channel: str,
    reason: str = "created",
    **fields: Any,
) -> Task:
    """Create a pending task (not yet dispatched) and its first history row; credentials are redacted on save."""
    task = checked_submission(owner, fields)
    with audited(actor, channel=channel, reason=reason):
        task.save()
    return task


def submit_task(
    *,
    owner: User | None,
    actor: Actor,
    channel: str,
    reason: str = "submitted",
    run_at: datetime | None = None,
    **fields: Any,
) -> Task:
    """Create a queued task and publish it to Celery once the creation has committed.

    SQL is the outbox: if the publish is lost (crash after commit, broker down or
    flushed), the re-dispatch sweep publishes the task again. Credentials in the
    submitted values are redacted when the task is saved, before anything is written
    (``tasks.redaction``, every channel). With a ``run_at`` ahead (timezone-aware;
    one in the past means now), the task waits queued and unpublished, durably in SQL
    (``run_after``), until crux.dispatch_due publishes it at its time; until it starts
    it can be cancelled or deleted like any queued task.
    """
    now = timezone.now()
    if run_at is not None and timezone.is_naive(run_at):
        raise InvalidTaskData({"run_at": ["Give a time zone, e.g. 2030-01-01T09:00:00Z."]})
    later = run_at if run_at is not None and run_at > now else None
    if later is not None:
        reason = f"{reason}; starts at {format_timestamp(later)}"
    task = checked_submission(owner, fields, state=TaskState.QUEUED, run_after=later)
    if later is None:
        mark_published(task, now)
    with transaction.atomic():
        with audited(actor, channel=channel, reason=reason):
            task.save()
        if later is None:
            publish_on_commit(task)
    return task


def submit_task_once(
    *,
    idempotency_key: str | None,
    owner: User,
    actor: Actor,
    channel: str,
    reason: str = "submitted",
    **fields: Any,
) -> tuple[Task, bool]:
    """Submit a task with credentials redacted; returns (task, created).

    With an ``idempotency_key`` (scoped to the owner), a retry of the same request
    returns the task the first one created, never a second task; the same key with
    a different request is refused. The key row commits with the task, so a
    concurrent duplicate fails on the unique constraint and replays the winner.
    The fingerprint is taken of the redacted request, so a retry carrying the same secret replays; the key is
    looked up as it is stored, redacted.
    """
    fields = redact_submission(fields)
    if idempotency_key is None:
        return submit_task(owner=owner, actor=actor, channel=channel, reason=reason, **fields), True
    _check_idempotency_key(idempotency_key)
    idempotency_key = redact_text(idempotency_key)
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


def _replay(owner: User, key: str, fingerprint: str) -> Task | None:
    entry = IdempotencyKey.objects.select_related("task").filter(owner=owner, key=key).first()
    if entry is None:
        return None
    if entry.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"This key was already used for a different request (task {entry.task_id}); use a new key for a new task."
        )
    return entry.task


def import_task(
    task_id: uuid.UUID, *, owner: User | None, actor: Actor, channel: str, reason: str, **fields: Any
) -> Task:
    """Record a task brought in from another system as it was there (its state, times and result).

    The values are validated like a submission's and redacted on save; the first
    history row says where it came from. Nothing is published: an imported task is not run.
    """
    task = Task(id=task_id, owner=owner, **fields)
    validate_task(task)
    with audited(actor, channel=channel, reason=reason):
        task.save()
    return task
