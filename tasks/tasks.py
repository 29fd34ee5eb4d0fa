"""Celery tasks of the domain: the execution of Crux tasks, the firing of periodic schedules, the audit checkpoint,
and the recovery of a restarted worker's own tasks.

Every task but the execution runs on the housekeeping queue (``crux.celery.route_task``), stores no result row
(``ignore_result``: the Task table and its history are the ledger) and logs only when it acted; the periodic sweep
that heals lost work is ``persistence.tasks.recovery_sweep``: it needs the broker's epoch.
"""

import json
import logging
import os
import signal
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import shared_task, states
from celery.exceptions import Retry
from celery.signals import task_revoked, worker_ready
from django.conf import settings
from django.db import OperationalError, close_old_connections, transaction
from django_celery_results.backends import DatabaseBackend

from tasks import checkpoints, execution, selectors, services
from tasks.dispatch import EXECUTE_TASK
from tasks.exceptions import InvalidTaskData
from tasks.ids import task_id_of
from tasks.models import CeleryResult, Task
from tasks.states import TaskState

logger = logging.getLogger(__name__)

# This worker instance: its main process's pid, fixed when the worker loads its tasks, before the pool's children
# are forked (they inherit it). Attempts are claimed as "<node name>:<instance>:<child pid>", so a worker stopping
# requeues only its own attempts, never those of another worker that shares its node name.
WORKER_INSTANCE = str(os.getpid())


class AttemptFailed(Exception):
    """A Crux attempt ended in an error: raised so that Celery's own view (its result row, Flower) shows the task
    failed (FAILURE) or waiting for its retry (RETRY), carrying the error as Crux stored it (redacted)."""


# What Celery records (SUCCESS, with this result) for a delivery that ran no attempt to its end.
NOT_RUN = {
    "skipped": "skipped: the task was not queued when this message arrived (a duplicate or stale delivery)",
    "discarded": "discarded: the attempt lost its claim (cancelled or recovered meanwhile); nothing was recorded",
}


# The attribute of a delivery's request that names the Celery state Crux recorded for it in its own transaction
# (``result_rows``: a result row written, or the completion its task row holds) and committed: Celery's own write of
# that state is skipped (``ResultBackend``).
STORED_STATE = "crux_stored_state"
# The attribute of a delivery's request that holds when its attempt started: the result row's ``date_started``.
STARTED_AT = "crux_started_at"


class ResultBackend(DatabaseBackend):
    """django-celery-results' backend (``CELERY_RESULT_BACKEND``: results in SQL, never expired), minus the rows that
    would repeat the task's. Celery's view of a delivery whose attempt is its task's current one is read from the
    task row (``selectors.current_delivery``): while it runs, the STARTED row Celery would have written at its start
    (the pool process's pid, the worker's name); once it completed, the SUCCESS row (the result ``"completed"``, its
    start, end and worker), the task's completion being final. A delivery that ends otherwise (FAILURE, RETRY) has
    its row written once, in its outcome's transaction, its ``date_started`` the claim's, by one statement
    (``CeleryResult``'s manager); Celery's separate commit of the state Crux recorded is skipped. A delivery's
    arguments are the Crux task id its Celery id names (``ids.celery_id``): its row leaves them out, and they are
    derived as it is read. A stored row (a delivery that ran nothing, a revoke) is read before the task."""

    TaskModel = CeleryResult

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        if state == getattr(request, STORED_STATE, None):
            return result
        return super().store_result(task_id, result, state, traceback, request, **kwargs)

    def _get_extended_properties(self, request: Any, traceback: str | None) -> dict[str, Any]:
        properties: dict[str, Any] = super()._get_extended_properties(request, traceback)
        started_at = getattr(request, STARTED_AT, None)
        if started_at is not None:
            properties["date_started"] = started_at
        if properties["task_name"] == EXECUTE_TASK:
            properties["task_args"] = properties["task_kwargs"] = None
        return properties

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = super()._get_task_meta_for(task_id)
        if meta["status"] == states.PENDING:
            meta.update(current_delivery_meta(task_id))
        if meta["task_name"] == EXECUTE_TASK and meta["task_args"] is None:
            # As Celery encodes a delivery's own (``argsrepr``, ``kwargsrepr``: execute_task(task_id)).
            arguments = {"task_args": repr((task_id_of(task_id),)), "task_kwargs": "{}"}
            meta.update(arguments, args=arguments["task_args"], kwargs=arguments["task_kwargs"])
        return meta


def current_delivery_meta(celery_task_id: str) -> dict[str, Any]:
    """Celery's view of a delivery with no row whose attempt its task row holds (running or completed), as Celery
    would have stored it (``task_track_started``'s STARTED, ``execute_task``'s SUCCESS); empty for any other."""
    delivery = selectors.current_delivery(celery_task_id)
    if delivery is None or (delivery.state == TaskState.COMPLETED and completed_by_another_publish(celery_task_id)):
        return {}
    seen: dict[str, Any] = {
        "task_name": EXECUTE_TASK,
        "worker": delivery.hostname,
        "date_started": delivery.started_at,
        "children": [],
    }
    if delivery.state == TaskState.RUNNING:
        return {**seen, "status": states.STARTED, "result": {"pid": delivery.pid, "hostname": delivery.hostname}}
    return {**seen, "status": states.SUCCESS, "result": TaskState.COMPLETED.value, "date_done": delivery.completed_at}


def completed_by_another_publish(celery_task_id: str) -> bool:
    """Whether a delivery of another publish of the same task completed it (a stale message that claimed it before
    its current publish arrived): that delivery's row says so, and the current publish ran nothing."""
    prefix = f"{task_id_of(celery_task_id)}."
    completions = CeleryResult.objects.filter(
        task_id__gte=prefix,
        task_id__lt=f"{prefix[:-1]}/",
        status=states.SUCCESS,
        result=json.dumps(TaskState.COMPLETED.value),
    )
    return completions.exclude(task_id=celery_task_id).exists()


def celery_state(task: Task) -> tuple[str, Any]:
    """Celery's view of a task just ended by this delivery: (state, result) as Celery itself stores them
    (``execute_task``'s return value or the exception it raises)."""
    if task.state == TaskState.FAILED:
        return states.FAILURE, AttemptFailed(task.last_error)
    if task.state == TaskState.QUEUED:
        return states.RETRY, AttemptFailed(task.last_error)
    return states.SUCCESS, NOT_RUN.get(task.state, task.state)


def result_rows(celery_task: Any) -> Callable[[Task], None]:
    """What the outcome calls inside its transaction: Celery's result row of this delivery written through its own
    backend (the row its tools read: ``AsyncResult``, Flower), so it commits with the change it reports, one commit
    fewer; once committed, Celery's own write of that state is skipped. The claim writes none, nor does a
    completion: the backend reads a running attempt's STARTED and a completed one's SUCCESS from the task row, a
    row (and its table's seven index entries) fewer a delivery."""
    request = celery_task.request

    def record(task: Task) -> None:
        state, result = celery_state(task)
        # A stale delivery (an earlier publish's message) that completed the task keeps its row: the task row names
        # only its current publish.
        if task.state != TaskState.COMPLETED or request.id != task.celery_task_id:
            trace = "".join(traceback.format_exception_only(result)) if isinstance(result, Exception) else None
            setattr(request, STARTED_AT, task.started_at)
            celery_task.backend.store_result(request.id, result, state, traceback=trace, request=request)
        transaction.on_commit(partial(setattr, request, STORED_STATE, state))

    return record


@shared_task(
    name=EXECUTE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=(AttemptFailed,),
    track_started=False,  # no STARTED row: the result backend reads it from the running task
)
def execute_task(self: Any, task_id: str) -> str:
    """Run one delivery of a task, and tell Celery honestly how it ended: completed is a SUCCESS, failed a FAILURE,
    a retry wait a RETRY (raised, never a message re-sent by Celery: Crux's ``run_after`` is the only wait).

    ``throws``: an attempt's failure is the handler's, logged by Crux; Celery logs it without a traceback.
    A delivery that claims the task records Celery's view in the outcome's transaction (``result_rows``); one that
    runs nothing (a duplicate) gets Celery's own SUCCESS row saying so.
    """
    outcome = execution.execute(
        task_id,
        worker_id=f"{self.request.hostname}:{WORKER_INSTANCE}:{os.getpid()}",
        in_transaction=None if self.request.is_eager else result_rows(self),
    )
    if outcome == TaskState.FAILED:
        raise AttemptFailed(selectors.attempt_end(task_id).error) from None
    if outcome == TaskState.QUEUED:
        end = selectors.attempt_end(task_id)
        raise Retry(f"Crux retries it at {end.retry_at}", exc=AttemptFailed(end.error), when=end.retry_at) from None
    return NOT_RUN.get(outcome, outcome)


@task_revoked.connect
def record_revoke(
    sender: Any = None, request: Any = None, terminated: bool = False, signum: Any = None, **kwargs: Any
) -> None:
    """In the worker's main process: a revoke sent with Celery's own tools is recorded as a cancel (the service
    decides whether there is anything to record: Crux's own cancels revoke too)."""
    if getattr(sender, "name", None) != EXECUTE_TASK or request is None or kwargs.get("expired"):
        return
    signal_name = signal.Signals(signum).name if isinstance(signum, int) else str(signum or "")
    close_old_connections()
    try:
        task = services.cancel_revoked(
            str(request.id), hostname=request.hostname or "", terminated=bool(terminated), signal=signal_name
        )
    except Exception:  # the worker goes on; the task's lease (if it ran) or a later cancel settles it
        logger.exception("revoke of Celery task %s not recorded", request.id)
        return
    if task is not None:
        logger.warning("task %s cancelled: Celery task %s revoked on %s", task.pk, request.id, request.hostname)


@shared_task(name="crux.audit_checkpoint", ignore_result=True)
def audit_checkpoint() -> str:
    """Write a signed checkpoint of every chain head outside the database (verify_audit compares against it)."""
    written = checkpoints.write_checkpoint()
    logger.info("audit checkpoint written: %s (%s tasks)", written.path, written.tasks)
    return str(written.path)


@shared_task(name="crux.history_tally", ignore_result=True)
def history_tally() -> int:
    """Add the history rows written since the tally's mark to the tally (``services.advance_history_tally``), so a
    scrape of /metrics groups only the rows written since. On a lock it cannot take in time, it stops where it is
    until its next run: the counters stay exact meanwhile, only the rows above the mark take longer to group."""
    try:
        added = services.advance_history_tally()
    except OperationalError as exc:
        logger.warning("history tally stopped short of the newest row until its next run: %s", exc)
        return 0
    logger.info("history tally: %s rows added", added)
    return added


@shared_task(name=services.FIRE_SCHEDULE, bind=True, ignore_result=True)
def fire_schedule(self: Any, schedule_id: int) -> str | None:
    """One firing of a periodic schedule (sent by beat): submit its task, unless it was disabled or deleted since."""
    try:
        task, created = services.fire_schedule(schedule_id, firing_id=self.request.id)
    except InvalidTaskData as exc:
        logger.error("schedule #%s submitted nothing: %s", schedule_id, exc)
        return None
    if task is None:
        return None
    if created:
        logger.info("schedule #%s submitted task %s", schedule_id, task.pk)
    return str(task.pk)


@worker_ready.connect
def recover_on_worker_start(sender: Any, **kwargs: Any) -> None:
    """Tasks this worker held before it restarted cannot be running any more: those of earlier instances of its
    node name whose main process is gone. A live namesake (two workers started with one name) keeps its own."""
    for instance in selectors.running_instances(sender.hostname) - {WORKER_INSTANCE}:
        if _alive(instance):
            logger.warning(
                "worker %s shares its name with live process %s: its tasks are left alone", sender.hostname, instance
            )
            continue
        counts = services.recover_orphans(worker_prefix=f"{sender.hostname}:{instance}:")
        if any(counts.values()):
            logger.warning("startup recovery of %s (instance %s): %s", sender.hostname, instance, counts)


def _alive(pid: str) -> bool:
    """Whether process ``pid`` of this machine still runs (a node name's ``%h`` is this machine's)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def requeue_on_worker_shutdown(hostname: str) -> None:
    """In the worker's main process once its pool has stopped (``crux.celery.RequeueOnShutdown``, on a warm or a
    cold shutdown): what the worker still ran (attempts past the shutdown grace period) is recorded interrupted and
    requeued at once, instead of staying ``running`` until its lease expires."""
    close_old_connections()
    requeued = services.requeue_after_shutdown(
        f"{hostname}:{WORKER_INSTANCE}:", grace_seconds=settings.WORKER_SHUTDOWN_GRACE_SECONDS
    )
    if requeued:
        logger.warning("shutdown of %s: %s running task(s) interrupted and requeued", hostname, requeued)
