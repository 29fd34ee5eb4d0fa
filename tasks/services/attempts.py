"""What a worker writes while it runs an attempt: the claim, the lease, progress, outputs, metrics, the outcome.

The claim and the outcome are compare-and-set writes under the row lock, so a
duplicate delivery does nothing and a late outcome is discarded. Every other
write of an attempt is conditional on the attempt still holding its claim (the
task running, at the same attempt, for the same worker), checked in the same
statement or under the same row lock as the write (on SQLite the IMMEDIATE
transaction serializes writers): an attempt whose worker stalled past its lease
and was recovered writes nothing more, and gets ``ClaimLost``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models import Field, QuerySet
from django.utils import timezone

from tasks import hooks
from tasks.audit import WORKER_ACTOR, Channel, audited, format_timestamp
from tasks.exceptions import ClaimLost, InvalidTaskData, TaskError, TaskNotFound
from tasks.ids import TaskId, parse_task_id
from tasks.models import METRIC_FIELDS, Task, TaskOutput, read_task
from tasks.redaction import redact_text
from tasks.registry import HandlerOptions, handler_options
from tasks.services.base import apply_transition, locked_task, refuse_unknown, start_ahead, write_task
from tasks.states import TaskState

logger = logging.getLogger(__name__)

OUTPUT_FIELDS = frozenset({"output_type", "content", "file_path", "file_size", "mime_type", "commit_hash", "branch"})


def lease_deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.TASK_LEASE_SECONDS)


@dataclass(frozen=True)
class TimeLimits:
    """Seconds an attempt may run: past ``soft`` the handler is told, past ``hard`` it is terminated (None: none)."""

    soft: float | None = None
    hard: float | None = None

    def describe(self) -> str:
        """The limits as a claim's reason names them: "no time limits", or "time limits soft 20s, hard none"."""
        if self.soft is None and self.hard is None:
            return "no time limits"

        def seconds(value: float | None) -> str:
            return "none" if value is None else f"{value:g}s"

        return f"time limits soft {seconds(self.soft)}, hard {seconds(self.hard)}"


def _declared(task: Task) -> HandlerOptions:
    """The task's handler's ``@options``; none for a handler no longer registered (the settings' defaults apply)."""
    try:
        return handler_options(task.handler)
    except KeyError:
        return HandlerOptions()


def _first_set(*values: float | None) -> float | None:
    """A run-time option: the first of (the task's, its handler's, the setting's) that is set."""
    return next((float(value) for value in values if value is not None), None)


def time_limits(task: Task) -> TimeLimits:
    """The limits in force for the task's attempts, each its own: the task's, else its handler's
    (``@options(soft_time_limit=..., time_limit=...)``), else TASK_SOFT_TIME_LIMIT_SECONDS / TASK_TIME_LIMIT_SECONDS."""
    declared = _declared(task)
    return TimeLimits(
        soft=_first_set(task.soft_time_limit, declared.soft_time_limit, settings.TASK_SOFT_TIME_LIMIT_SECONDS),
        hard=_first_set(task.time_limit, declared.time_limit, settings.TASK_TIME_LIMIT_SECONDS),
    )


def claim(task_id: TaskId, *, worker_id: str) -> Task | None:
    """Move a queued task to running for a new attempt, or return None (duplicate delivery).

    A compare-and-set (``write_task``): a delivery of a task that is already
    running or finished does nothing, so a task never runs twice at once.
    """
    try:
        return write_task(task_id, partial(_claim, worker_id=worker_id))
    except TaskNotFound:
        logger.warning("delivery of unknown task %s ignored", task_id)
        return None


def _claim(task: Task, *, worker_id: str) -> Task | None:
    if task.state != TaskState.QUEUED:
        logger.info("duplicate delivery of task %s ignored: it is %s", task.pk, task.state)
        return None
    start = start_ahead(task, timezone.now())
    if start is not None:
        _hold_back(task, start)
        return None
    if task.is_deleted:
        apply_transition(
            task,
            TaskState.CANCELLED,
            actor=WORKER_ACTOR,
            channel=Channel.WORKER,
            reason="soft-deleted before it started; not run",
        )
        return None
    return apply_transition(
        task,
        TaskState.RUNNING,
        actor=WORKER_ACTOR,
        channel=Channel.WORKER,
        # The worker, attempt and start are the row's changes: the reason adds what is in force beside them.
        reason=f"claimed for attempt {task.attempt_count + 1} of {task.max_attempts}, {time_limits(task).describe()}",
        attempt_count=task.attempt_count + 1,
        worker_id=worker_id,
        lease_expires_at=lease_deadline(),
        heartbeat_at=timezone.now(),
        progress=0.0,
        current_phase="",
    )


def _hold_back(task: Task, start: datetime) -> None:
    """A delivery before the task's start time (a stray or duplicate message, clock skew) does not start it: the
    task waits unpublished again, and crux.dispatch_due publishes it when it is due."""
    logger.warning("delivery of task %s before its start time %s ignored", task.pk, start)
    if task.dispatched_at is None:
        return
    task.dispatched_at, task.dispatch_epoch = None, ""
    with audited(
        WORKER_ACTOR,
        channel=Channel.WORKER,
        reason=f"delivered before its start time {format_timestamp(start)}: not started, published again when due",
    ):
        task.save()


def retry_delay(base: float, attempt: int, *, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): ``base`` doubling per attempt, at most ``cap``, then a
    random 50-100% of that ("equal jitter"), so tasks that failed together (a provider outage) do not all come
    back at the same instant, yet each still waits at least half its backoff."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return delay * (rng or random).uniform(0.5, 1.0)


def retry_backoff(task: Task) -> float:
    """The task's base backoff: its own ``retry_backoff``, else its handler's (``@options(retry_backoff=...)``),
    else TASK_RETRY_BACKOFF_SECONDS."""
    backoff = _first_set(task.retry_backoff, _declared(task).retry_backoff, settings.TASK_RETRY_BACKOFF_SECONDS)
    return cast(float, backoff)  # the setting always has a value


def _fail_or_retry(task: Task, attempt: int, error: str, *, retry_at: datetime | None, permanent: bool) -> Task:
    """A failed attempt: queued again to wait for its retry while attempts are left, else failed.

    The wait lives in SQL (``run_after``, published when due by crux.dispatch_due), never in a broker ETA; the
    history row records the error and the time of the next attempt.
    """
    if permanent or attempt >= task.max_attempts:
        why = "a permanent failure" if permanent else f"attempt limit reached ({attempt} of {task.max_attempts})"
        return apply_transition(
            task,
            TaskState.FAILED,
            actor=WORKER_ACTOR,
            channel=Channel.WORKER,
            reason=f"handler raised on attempt {attempt}: {why}",
            details={"error": error},
            last_error=error,
        )
    now = timezone.now()
    if retry_at is not None:
        next_at, how = max(retry_at, now), "as the handler asked"
    else:
        next_at = now + timedelta(
            seconds=retry_delay(retry_backoff(task), attempt, cap=settings.TASK_RETRY_BACKOFF_MAX_SECONDS)
        )
        how = "after backoff"
    at = format_timestamp(next_at)
    return apply_transition(
        task,
        TaskState.QUEUED,
        actor=WORKER_ACTOR,
        channel=Channel.WORKER,
        reason=f"handler raised on attempt {attempt} of {task.max_attempts}: next attempt at {at} ({how})",
        details={"error": error, "next_attempt_at": at},
        last_error=error,
        error_count=task.error_count + 1,
        run_after=next_at,
    )


def finish_attempt(
    task_id: TaskId,
    *,
    attempt: int,
    worker_id: str,
    result: Any = None,
    error: str = "",
    retry_at: datetime | None = None,
    permanent: bool = False,
    metrics: dict[str, Any] | None = None,
    in_transaction: Callable[[Task], None] | None = None,
    claimed: Task | None = None,
    outputs: Sequence[PreparedOutput] = (),
) -> Task | None:
    """Record the outcome of an attempt: completed with ``result``, or ``error`` (retried or failed).

    An error is retried while attempts are left: after the task's backoff, or at ``retry_at`` (the handler raised
    ``Retry``); ``permanent`` (the handler raised ``PermanentFailure``) fails it at once.
    Compare-and-set on (running, attempt, worker): if the task was cancelled or
    recovered meanwhile, the outcome is discarded (and logged), never applied twice.
    ``metrics`` (METRIC_FIELDS) are written in the outcome's own UPDATE of the task row, so an outcome and its
    figures commit together, or neither does; so do the attempt's ``outputs`` not written yet, and what
    ``in_transaction`` writes, called with the task once the outcome is applied.

    ``claimed``: the task as ``claim`` returned it, with what the attempt wrote since (progress, figures) set on it.
    The outcome is then a compare-and-set on those values, the task not read again: a write by anyone else since
    the claim moved its version, and the outcome is made on the task read under its lock instead.
    """
    return write_task(
        task_id,
        partial(
            _finish,
            attempt=attempt,
            worker_id=worker_id,
            result=result,
            error=error,
            retry_at=retry_at,
            permanent=permanent,
            metrics=metrics or {},
            in_transaction=in_transaction,
            outputs=outputs,
        ),
        committed=claimed,
    )


def _finish(
    task: Task,
    *,
    attempt: int,
    worker_id: str,
    result: Any,
    error: str,
    retry_at: datetime | None,
    permanent: bool,
    metrics: dict[str, Any],
    in_transaction: Callable[[Task], None] | None,
    outputs: Sequence[PreparedOutput],
) -> Task | None:
    if (task.state, task.attempt_count, task.worker_id) != (TaskState.RUNNING, attempt, worker_id):
        logger.warning(
            "outcome of task %s attempt %s discarded: it is now %s at attempt %s",
            task.pk,
            attempt,
            task.state,
            task.attempt_count,
        )
        return None
    for name, value in checked_metrics(metrics).items():
        setattr(task, name, value)
    if error:
        ended = _fail_or_retry(task, attempt, error, retry_at=retry_at, permanent=permanent)
    else:
        ended = apply_transition(
            task,
            TaskState.COMPLETED,
            actor=WORKER_ACTOR,
            channel=Channel.WORKER,
            reason=f"completed on attempt {attempt}",
            result=result,
            progress=1.0,
        )
    # After the outcome's save, which prepares its history row before its first statement takes the write lock.
    write_outputs(outputs)
    if in_transaction is not None:
        in_transaction(ended)
    return ended


def _claim_held(attempt: int, worker_id: str) -> dict[str, Any]:
    """What a task holds while ``attempt`` on ``worker_id`` holds its claim: the condition of the attempt's writes."""
    return {"state": TaskState.RUNNING, "attempt_count": attempt, "worker_id": worker_id}


def _live_attempt(task_id: TaskId, attempt: int, worker_id: str) -> QuerySet[Task]:
    return Task.objects.filter(pk=task_id, **_claim_held(attempt, worker_id))


def _claim_lost(task_id: TaskId, attempt: int, worker_id: str) -> ClaimLost:
    return ClaimLost(f"task {task_id} attempt {attempt} on {worker_id} no longer holds its claim: write refused")


def _hold_claim(task_id: TaskId, attempt: int, worker_id: str, *, lock: bool = True) -> None:
    """Inside the caller's transaction: lock the task row, or raise ClaimLost if the attempt lost its claim (without
    ``lock``: check the claim as committed now, locking nothing).

    The row's claim alone is read by ``read_task``, whose SQL is compiled once: compiling the filtered query was 190
    of the 280 µs this check took, for every output an attempt writes, and building a task of all its fields 60."""
    held = _claim_held(attempt, worker_id)
    task = read_task(parse_task_id(task_id), lock=lock, only=tuple(held))
    if task is None or any(getattr(task, name) != value for name, value in held.items()):
        raise _claim_lost(task_id, attempt, worker_id)


def renew_lease(task_id: TaskId, *, attempt: int, worker_id: str) -> bool:
    """Extend the lease of a running attempt; False means the attempt lost its claim."""
    now = timezone.now()
    return bool(_live_attempt(task_id, attempt, worker_id).update(lease_expires_at=lease_deadline(), heartbeat_at=now))


def report_progress(
    task_id: TaskId,
    *,
    attempt: int,
    worker_id: str,
    progress: float,
    phase: str | None = None,
    outputs: Sequence[PreparedOutput] = (),
) -> dict[str, Any]:
    """Live progress of a running attempt (no history row: it is telemetry, which the mirror follows); returns the
    values written.

    One conditional UPDATE, with the attempt's ``outputs`` not written yet in its transaction: nothing is written,
    and ClaimLost raised, if the attempt lost its claim.
    """
    if not 0.0 <= progress <= 1.0:
        raise InvalidTaskData({"progress": ["Ensure this value is between 0 and 1."]})
    fields: dict[str, Any] = {"progress": progress}
    if phase is not None:
        fields["current_phase"] = redact_text(phase)[:100]  # an UPDATE sends no pre_save: redacted here
    with _outputs_joining(outputs):
        if not _live_attempt(task_id, attempt, worker_id).update(**fields, updated_at=timezone.now()):
            raise _claim_lost(task_id, attempt, worker_id)
        write_outputs(outputs)
    hooks.progress_reported.send(sender=Task, task_id=task_id)
    return fields


def checked_metrics(fields: dict[str, Any]) -> dict[str, Any]:
    """The figures ``fields`` names, each cleaned as its column's field cleans it (an unknown name, a negative count
    or a text too long is refused with field messages, not left to a database constraint), credentials masked."""
    refuse_unknown(fields, METRIC_FIELDS)
    cleaned, errors = {}, {}
    for name, value in fields.items():
        field = Task._meta.get_field(name)
        assert isinstance(field, Field)  # METRIC_FIELDS name the task's own columns
        try:
            cleaned[name] = field.clean(value, None)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise InvalidTaskData(errors)
    if cleaned.get("stop_reason"):
        cleaned["stop_reason"] = redact_text(cleaned["stop_reason"])[: Task._meta.get_field("stop_reason").max_length]
    return cleaned


def record_metrics(
    task_id: TaskId, *, attempt: int, worker_id: str, outputs: Sequence[PreparedOutput] = (), **fields: Any
) -> dict[str, Any]:
    """Set a running attempt's execution figures (the named ones; the others keep their values); returns the values
    written.

    One conditional UPDATE of the task row (the figures are not tracked: no history row), with the attempt's
    ``outputs`` not written yet in its transaction: nothing is written, and ClaimLost raised, if the attempt lost
    its claim.
    """
    figures = checked_metrics(fields)
    with _outputs_joining(outputs):
        if not figures:
            _hold_claim(task_id, attempt, worker_id, lock=bool(outputs))  # nothing to update: the claim checked
        elif not _live_attempt(task_id, attempt, worker_id).update(**figures):
            raise _claim_lost(task_id, attempt, worker_id)
        write_outputs(outputs)
    return figures


def _outputs_joining(outputs: Sequence[PreparedOutput]) -> AbstractContextManager[Any]:
    """The transaction a conditional write and the attempt's ``outputs`` commit in; with none, the write's own."""
    return transaction.atomic(using=router.db_for_write(TaskOutput)) if outputs else nullcontext()


def _checked_output(task: Task | TaskId, fields: dict[str, Any]) -> TaskOutput:
    """A validated output, not saved yet; ``task`` is a Task or a task id."""
    refuse_unknown(fields, OUTPUT_FIELDS)
    output = TaskOutput(**({"task": task} if isinstance(task, Task) else {"task_id": task}), **fields)
    try:
        output.full_clean(exclude=["task"])
    except ValidationError as exc:
        raise InvalidTaskData(exc.message_dict) from None
    return output


@dataclass(frozen=True)
class PreparedOutput:
    """An output of a running attempt, checked, redacted and its INSERT built (``TaskOutput.compiled_insert``; None:
    saved instead), to be written later in one of the attempt's transactions (``write_outputs``)."""

    output: TaskOutput
    insert: tuple[str, tuple[Any, ...]] | None


def prepare_output(
    task_id: TaskId, output_type: str, content: str, *, attempt: int, worker_id: str, **meta: Any
) -> PreparedOutput:
    """An output a running attempt produced (stdout, a log line, an artifact), credentials in its text masked,
    ready to write: refused (``InvalidTaskData``) if it is not valid, and ``ClaimLost`` if the attempt no longer
    holds its claim as committed now (a read, no lock: the write checks again, under the lock)."""
    output = _checked_output(task_id, {"output_type": output_type, "content": content, **meta})
    _hold_claim(task_id, attempt, worker_id, lock=False)
    return PreparedOutput(output, output.compiled_insert(router.db_for_write(TaskOutput)))


def write_outputs(outputs: Sequence[PreparedOutput]) -> None:
    """Inside the caller's transaction, once it holds the attempt's claim: insert ``outputs`` in their order (their
    ids, the order a task's outputs are read in, follow it)."""
    using = router.db_for_write(TaskOutput)
    for prepared in outputs:
        if prepared.insert is None:
            prepared.output.save(using=using, force_insert=True)
        else:
            prepared.output.run_insert(using, prepared.insert)


def record_outputs(task_id: TaskId, outputs: Sequence[PreparedOutput], *, attempt: int, worker_id: str) -> None:
    """Write a running attempt's prepared outputs in one transaction, under the task's row lock, only while the
    attempt holds its claim, else ClaimLost and nothing is written. Everything but the claim's check and the
    INSERTs was done before (``prepare_output``), so the write lock (SQLite) is held for those statements only."""
    if not outputs:
        return
    with transaction.atomic(using=router.db_for_write(TaskOutput)):
        _hold_claim(task_id, attempt, worker_id)
        write_outputs(outputs)


def record_output(
    task_id: TaskId, output_type: str, content: str, *, attempt: int, worker_id: str, **meta: Any
) -> TaskOutput:
    """An output a running attempt produced, written at once in a transaction of its own (``prepare_output``,
    then ``record_outputs``)."""
    prepared = prepare_output(task_id, output_type, content, attempt=attempt, worker_id=worker_id, **meta)
    record_outputs(task_id, [prepared], attempt=attempt, worker_id=worker_id)
    return prepared.output


def add_output(task_id: TaskId, **fields: Any) -> TaskOutput:
    """Append an output sent by a client to a task that is not deleted; credentials in its text are masked."""
    with transaction.atomic():
        task = locked_task(task_id)
        if task.is_deleted:
            raise TaskError(f"task {task.pk} is deleted: restore it before adding outputs", field="task_id")
        output = _checked_output(task, fields)
        output.save()
        return output
