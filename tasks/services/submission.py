"""Creating tasks: a pending task, a submission published to a worker, an idempotent retry, a batch, a legacy
import."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from tasks.audit import Actor, audited, canonical_json, format_timestamp
from tasks.exceptions import InvalidTaskData, StaleState
from tasks.history import create_tasks
from tasks.models import IdempotencyKey, Task
from tasks.redaction import redact_submission, redact_text
from tasks.registry import registered_names
from tasks.services.base import (
    CREATE_FIELDS,
    BatchChecks,
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


def checked_submission(
    owner: User | None, fields: dict[str, Any], *, batch: BatchChecks | None = None, **preset: Any
) -> Task:
    """The unsaved task a submission of ``fields`` makes, checked as every door checks one (the API, the admin's
    add form, a schedule when it is saved, ``create_task`` and ``submit_task``): settable fields only, a registered
    handler, its ``@options`` for what the fields leave out, the model's rules, the payload against the handler's
    declaration, a known queue. InvalidTaskData, by field, otherwise; nothing is written. ``preset``: what the
    caller decides itself (the state, the start time); ``batch``: one task of a batch (``BatchChecks``)."""
    refuse_unknown(fields, CREATE_FIELDS)
    _check_handler(fields)
    values = {**preset, **with_handler_defaults(fields)}
    task = Task(owner=owner, **values) if batch is None else batch.new_task(owner, values)
    validate_task(task, payload=True, batch=batch)
    check_queue(task, None if batch is None else batch.queues)
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
    task, reason = _queued_task(owner, fields, run_at, reason, timezone.now())
    with transaction.atomic():
        with audited(actor, channel=channel, reason=reason):
            task.save()
        if task.dispatched_at is not None:
            publish_on_commit(task)
    return task


def _queued_task(
    owner: User | None,
    fields: dict[str, Any],
    run_at: datetime | None,
    reason: str,
    now: datetime,
    batch: BatchChecks | None = None,
) -> tuple[Task, str]:
    """The checked, unsaved queued task of a submission and the reason its history row gives: published now
    (``mark_published``), or waiting unpublished for a ``run_at`` ahead."""
    if run_at is not None and timezone.is_naive(run_at):
        raise InvalidTaskData({"run_at": ["Give a time zone, e.g. 2030-01-01T09:00:00Z."]})
    later = run_at if run_at is not None and run_at > now else None
    if later is not None:
        reason = f"{reason}; starts at {format_timestamp(later)}"
    task = checked_submission(owner, fields, batch=batch, state=TaskState.QUEUED, run_after=later)
    if later is None:
        mark_published(task, now)
    return task, reason


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


class BatchKeyReused(StaleState):
    """An item's idempotency key already names another request's task: the batch is refused (409), whole."""

    field = "tasks"


@dataclass
class _BatchItem:
    index: int
    task: Task
    reason: str
    key: str | None
    fingerprint: str
    created: bool = True


def submit_batch(
    *,
    owner: User,
    actor: Actor,
    channel: str,
    items: Sequence[Mapping[str, Any]],
    reason: str = "submitted in a batch",
) -> list[tuple[Task, bool]]:
    """Submit up to TASK_BATCH_MAX tasks in one transaction, all or none; (task, created) per item, in order.

    Each item is what ``submit_task_once`` takes (its fields, ``run_at``, an optional ``idempotency_key``), checked
    the same way; every item is checked before anything is written, and one bad item refuses the batch with its
    index and fields (``{"tasks": {"3": {"payload": {...}}}}``). The new tasks and their first history rows are
    inserted together (``tasks.history.create_tasks``) and published after commit in one pipelined round trip.
    An item whose key an earlier request (or an earlier item of this batch) used with the same fields replays that
    task (created False); a key used with different fields refuses the batch (409, or 400 within the batch).
    """
    limit = settings.TASK_BATCH_MAX
    if not 1 <= len(items) <= limit:
        raise InvalidTaskData({"tasks": [f"Send 1 to {limit} tasks (TASK_BATCH_MAX); this batch has {len(items)}."]})
    try:
        return _submit_batch(owner, actor, channel, items, reason)
    except IntegrityError:
        # A concurrent request committed one of the keys first: its task is now replayed, the rest created.
        if not any(item.get("idempotency_key") for item in items):
            raise
        return _submit_batch(owner, actor, channel, items, reason)


def _submit_batch(
    owner: User, actor: Actor, channel: str, items: Sequence[Mapping[str, Any]], reason: str
) -> list[tuple[Task, bool]]:
    now = timezone.now()
    batch = BatchChecks()
    checked: list[_BatchItem] = []
    errors: dict[str, Any] = {}
    for index, submitted in enumerate(items):
        fields = redact_submission(submitted)
        key = fields.pop("idempotency_key", None)
        try:
            if key is not None:
                _check_idempotency_key(key, field="idempotency_key")
                key = redact_text(key)
            fingerprint = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest() if key else ""
            run_at = fields.pop("run_at", None)
            task, item_reason = _queued_task(owner, fields, run_at, reason, now, batch)
        except InvalidTaskData as exc:
            errors[str(index)] = exc.errors
            continue
        checked.append(_BatchItem(index, task, item_reason, key, fingerprint))
    first_of_key: dict[str, _BatchItem] = {}
    for item in checked:
        if item.key is None:
            continue
        first = first_of_key.setdefault(item.key, item)
        if first is not item and first.fingerprint != item.fingerprint:
            errors[str(item.index)] = {
                "idempotency_key": [f"Item {first.index} has this key with a different request; use a new key."]
            }
    if errors:
        raise InvalidTaskData({"tasks": dict(sorted(errors.items(), key=lambda entry: int(entry[0])))})
    earlier = IdempotencyKey.objects.select_related("task").filter(owner=owner, key__in=list(first_of_key))
    replays = {entry.key: entry for entry in earlier}
    for item in checked:
        if item.key is None:
            continue
        entry = replays.get(item.key)
        if entry is not None and entry.fingerprint != item.fingerprint:
            raise BatchKeyReused(
                f"Item {item.index}: its idempotency key was already used for a different request (task "
                f"{entry.task_id}); use a new key for a new task."
            )
        first = first_of_key[item.key]
        if entry is not None or first is not item:
            item.task, item.created = (entry.task if entry is not None else first.task), False
    new = [item for item in checked if item.created]
    with transaction.atomic():
        with audited(actor, channel=channel, reason=reason):
            create_tasks([item.task for item in new], reasons=[item.reason for item in new])
        IdempotencyKey.objects.bulk_create(
            IdempotencyKey(owner=owner, key=item.key, task=item.task, fingerprint=item.fingerprint)
            for item in new
            if item.key is not None
        )
        publish_on_commit(*(item.task for item in new if item.task.dispatched_at is not None))
    return [(item.task, item.created) for item in checked]


def _check_idempotency_key(key: str, *, field: str = "Idempotency-Key") -> None:
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not (key.isascii() and key.isprintable()):
        raise InvalidTaskData(
            {field: [f"Use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, e.g. a UUID."]}
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
