"""What every write of the task domain shares: the row lock, validation, and the one place a transition is applied."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from tasks import dispatch
from tasks.audit import Actor, audited
from tasks.exceptions import InvalidTaskData, TaskChanged, TaskNotFound
from tasks.ids import TaskId, parse_task_id
from tasks.models import Task, read_task
from tasks.registry import handler_options, payload_checker, payload_errors, registered_names
from tasks.states import TERMINAL_STATES, TaskState, check_transition

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
        "retry_backoff",
        "soft_time_limit",
        "time_limit",
    }
)
# Where a task is published is decided once, when it is created.
CREATE_FIELDS = EDITABLE_FIELDS | {"request_payload", "queue", "priority"}
# What a handler's ``@options`` supplies when the submission does not say (limits and backoff are read at run time).
HANDLER_DEFAULT_FIELDS = ("queue", "priority", "max_attempts")
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


def locked_task(task_id: TaskId) -> Task:
    """The task, its row locked until the end of the caller's transaction; TaskNotFound if there is none.

    Its values are kept as the committed ones for its next save in this transaction (``Task.keep_locked_read``):
    the change the caller makes is saved without reading the row a second time."""
    task = _read_task(task_id, lock=True)
    task.keep_locked_read()
    return task


def unlocked_task(task_id: TaskId) -> Task:
    """The task as committed now, its row not locked; TaskNotFound if there is none. Its next save is a
    compare-and-set on this read (``Task.keep_read``): TaskChanged if another write came between."""
    task = _read_task(task_id, lock=False)
    task.keep_read()
    return task


def _read_task(task_id: TaskId, *, lock: bool) -> Task:
    pk = parse_task_id(task_id)
    task = read_task(pk, lock=lock)
    if task is None:
        raise TaskNotFound(pk)
    return task


Written = TypeVar("Written")


def write_task(task_id: TaskId, write: Callable[[Task], Written], *, committed: Task | None = None) -> Written:
    """``write(task)`` in a transaction: first with the task read without its row lock, its save a compare-and-set
    on that read (``unlocked_task``), and again with the task read under the lock (``locked_task``) if another
    write came between. TaskNotFound if there is no task.

    ``committed``: an instance whose values are the row's as this process last committed it (the worker's claim,
    with what the attempt wrote since to untracked fields set on it) stands for the first read, with no query.

    Whatever ``write`` decides and prepares before its save (validation, the history row and its MAC) then runs
    before the save takes the write lock, which on SQLite every writer of the database waits for: the worker's
    claim and outcome hold it for their statements and commit only. A ``write`` that saves nothing takes no lock.
    """
    if committed is None:
        task = unlocked_task(task_id)
    else:
        task = committed
        task.keep_read()
    try:
        with transaction.atomic():
            return write(task)
    except TaskChanged as exc:
        logger.info("%s: writing it again under its row lock", exc)
    with transaction.atomic():
        return write(locked_task(task_id))


def refuse_unknown(fields: dict[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(fields).difference(allowed))
    if unknown:
        raise InvalidTaskData({name: ["This field cannot be set here."] for name in unknown})


# A field's checks (``Field.clean``) depend on its value alone, so a value known to have passed them need not be
# checked again, unless Task declares constraints (one over a skipped field would not be checked).
_FIELD_CHECKS_SKIPPABLE = not Task._meta.constraints
# Foreign keys are left to the database's constraints: Django's check of them is a query per key on every save.
_UNCHECKED_RELATIONS = tuple(f.name for f in Task._meta.concrete_fields if f.is_relation)
_CHECKED_FIELDS = tuple(f.name for f in Task._meta.concrete_fields if not f.is_relation)


class BatchChecks:
    """What building and checking the new tasks of one batch keeps from task to task, so that each is the task it
    is alone and is refused with the errors it gets alone, for less work: the fields' defaults read once (only the
    callable ones called per task), each handler's payload serializer built once (``registry.payload_checker``),
    the known queues read once, and a field value (same field, type and value) that an earlier task of the batch
    passed unchanged is not checked again, since a field's checks (``Field.clean``) depend on its value alone.
    The model's ``clean()`` still runs for every task, and no field is skipped if Task declares constraints (a
    constraint over a skipped field would not be checked)."""

    def __init__(self) -> None:
        self.queues = task_queues()
        fields = Task._meta.concrete_fields
        self._defaults = [field.get_default() for field in fields]
        self._called = [(i, f.get_default) for i, f in enumerate(fields) if f.has_default() and callable(f.default)]
        self._positions = {field.attname: i for i, field in enumerate(fields) if not field.is_relation}
        self._payload_checkers: dict[str, Callable[[Any], dict[str, Any]]] = {}
        self._passed: set[tuple[str, type, Any]] = set()

    def new_task(self, owner: Any, values: dict[str, Any]) -> Task:
        """``Task(owner=owner, **values)``, its field values given in order (Django's fast path, as a read row)."""
        if not self._positions.keys() >= values.keys():
            return Task(owner=owner, **values)
        row = self._defaults.copy()
        for index, default in self._called:
            row[index] = default()
        for name, value in values.items():
            row[self._positions[name]] = value
        task = Task(*row)  # type: ignore[misc]  # the stubs' plugin reads ``*row`` as the id alone
        task.owner = owner
        return task

    def payload_errors(self, handler: str, payload: Any) -> dict[str, Any]:
        checker = self._payload_checkers.get(handler)
        if checker is None:
            checker = self._payload_checkers[handler] = payload_checker(handler)
        return checker(payload)

    def unchecked(self, task: Task) -> tuple[list[str], list[tuple[str, type, Any]]]:
        """The fields whose value an earlier task passed, and the task's other hashable values as (field, type,
        value), to remember once it passes."""
        passed, fresh = [], []
        for name in _CHECKED_FIELDS:
            value = getattr(task, name)
            kind = type(value)
            if kind.__hash__ is None:
                continue
            key = (name, kind, value)
            if _FIELD_CHECKS_SKIPPABLE and key in self._passed:
                passed.append(name)
            else:
                fresh.append(key)
        return passed, fresh

    def remember(self, task: Task, fresh: list[tuple[str, type, Any]]) -> None:
        """The values of a task that passed every check, those its fields' checks left as they were."""
        for name, kind, value in fresh:
            now = getattr(task, name)
            if type(now) is kind and now == value:
                self._passed.add((name, kind, value))


def validate_task(task: Task, *, payload: bool = False, batch: BatchChecks | None = None) -> None:
    """Check the task's fields (and with ``payload``, its payload against its handler's declaration) before a write.

    Every door that sets a payload or a handler (API, admin, commands) reaches it through a service that passes
    ``payload=True``, so a bad payload is refused with field-level messages (``{"payload": {field: [...]}}``) before
    anything is written, never discovered at run time. An unregistered handler is the caller's refusal, not this one.
    ``batch``: one of the tasks of a batch, checked with what the batch's earlier tasks left (``BatchChecks``).
    A task read for a change has the fields it did not change left unchecked (``Task.fields_as_read``): a field's
    checks depend on its value alone (no constraint of Task spans fields), and the stored value passed them.
    """
    errors: dict[str, Any] = {}
    skipped, fresh = ([], []) if batch is None else batch.unchecked(task)
    if batch is None and _FIELD_CHECKS_SKIPPABLE:
        skipped = task.fields_as_read()
    try:
        task.full_clean(exclude=[*_UNCHECKED_RELATIONS, *skipped], validate_unique=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if payload and task.handler in registered_names():
        check = payload_errors if batch is None else batch.payload_errors
        payload_problems = check(task.handler, task.request_payload)
        if payload_problems:
            errors["payload"] = payload_problems
    if errors:
        raise InvalidTaskData(errors)
    if batch is not None:
        batch.remember(task, fresh)


def with_handler_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` completed with its handler's declared defaults (``@options``) for what the submission left out."""
    handler = fields.get("handler", Task._meta.get_field("handler").default)
    if handler not in registered_names():
        return fields
    declared = handler_options(handler)
    defaults = {name: getattr(declared, name) for name in HANDLER_DEFAULT_FIELDS}
    return {**{name: value for name, value in defaults.items() if value is not None}, **fields}


def task_queues() -> list[str]:
    """The queues tasks may name: the default queue, those handlers declare (``@options(queue=...)``) and
    ``TASK_QUEUES``; never the housekeeping queue. A worker started without ``-Q`` consumes them all."""
    declared = {handler_options(name).queue for name in registered_names()}
    names = {settings.CELERY_TASK_DEFAULT_QUEUE, *settings.TASK_QUEUES, *declared} - {None, ""}
    return sorted(names - {settings.CELERY_HOUSEKEEPING_QUEUE})


def check_queue(task: Task, known: Collection[str] | None = None) -> None:
    """Refuse a task bound for a queue no worker is meant to consume: the one rule of every door (API, admin).
    ``known``: ``task_queues()``, if the caller read it already."""
    if task.queue and task.queue not in (task_queues() if known is None else known):
        if task.queue == settings.CELERY_HOUSEKEEPING_QUEUE:
            message = f"{task.queue!r} is Crux's housekeeping queue, not for tasks."
        else:
            message = f"Unknown queue {task.queue!r}; known: {', '.join(task_queues())} (or blank: the default)."
        raise InvalidTaskData({"queue": [message]})


def mark_published(task: Task, now: datetime) -> None:
    """Record a new publish of the task on the instance, saved with the change that publishes it: when and how many
    so far, which names this publish's Celery task id (``Task.celery_task_id``); a confirmation by the broker is
    awaited anew."""
    task.dispatched_at, task.dispatch_count, task.dispatch_epoch = now, task.dispatch_count + 1, ""


def publish_on_commit(*tasks: Task) -> None:
    """Publish the tasks (as marked by ``mark_published``), each to its queue with its priority, once the
    transaction commits, together (``dispatch.publish_all``): SQL is the outbox, the sweep re-publishes. None: no
    broker connection is taken (a batch of tasks that all start later)."""
    if not tasks:
        return
    publishes = [dispatch.Publish(task.pk, task.celery_task_id, task.queue, task.priority) for task in tasks]
    transaction.on_commit(partial(dispatch.publish_all, publishes))


def apply_transition(
    task: Task,
    target: str,
    *,
    actor: Actor,
    channel: str,
    reason: str,
    details: dict[str, Any] | None = None,
    **updates: Any,
) -> Task:
    """Move a locked task to ``target``: the single place where a transition is applied.

    The request is checked against the declared transitions before the task is
    touched (a refused one leaves the instance as it was); ``Task.save()`` checks
    again whatever reaches the database by any path, and the history writer
    (``tasks.history``) records the row.
    """
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
    # A task whose start time has not come waits unpublished; crux.dispatch_due publishes it when it is due.
    publish = target == TaskState.QUEUED and start_ahead(task, now) is None
    if target == TaskState.QUEUED:
        task.dispatched_at, task.dispatch_epoch, task.worker_id, task.lease_expires_at = None, "", "", None
        if publish:
            mark_published(task, now)
    validate_task(task)
    with audited(actor, channel=channel, reason=reason, details=details):
        task.save()
    if publish:
        publish_on_commit(task)
    return task


def start_ahead(task: Task, now: datetime) -> datetime | None:
    """The task's start time (``run_at``, or a retry's wait) if it is still ahead: it must not start yet."""
    return task.run_after if task.run_after is not None and task.run_after > now else None
