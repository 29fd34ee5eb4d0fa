"""The Celery application; its configuration lives in Django settings (CELERY_*).

Task work (``crux.execute_task``) goes to the task's queue: the default queue, a queue its handler declares or
one of ``TASK_QUEUES`` (``tasks.services.task_queues``); a worker started without ``-Q`` consumes all of them.
Every other Celery task (the recovery sweep, re-dispatch, mirror reconcile, backup, auto-purge, audit checkpoints)
goes to ``CELERY_HOUSEKEEPING_QUEUE``, which a worker of its own consumes (Procfile ``housekeeping``): a backlog of
task work never delays the detection of a lost worker or a lost message.
"""

import functools
import logging.config
import os
import socket
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from django.conf import settings
from django.db import close_old_connections
from kombu import Queue

from crux.memory import freeze_start_up_objects

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
logger = logging.getLogger(__name__)

# Broker connections whose retry loops end (crux/broker.py): no publish or control broadcast outlives its timeouts.
app = Celery("crux", amqp="crux.broker:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def retire_old_connections(sender: Any = None, **kwargs: Any) -> None:
    """Around each task, as around a web request: a connection past CONN_MAX_AGE, or broken, is closed (the next
    query opens a new one, health-checked); the others are kept (``CELERY_DB_REUSE_MAX``). Not for a task run
    eagerly, inside its caller's transaction."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


@functools.cache
def attempt_histograms() -> tuple[Any, Any]:
    """Task run time and queue wait, by handler and queue: multiprocess histograms (crux/metrics.py sums every
    process's file). Built on first use, once Django's settings have put PROMETHEUS_MULTIPROC_DIR in the
    environment: prometheus_client picks its mode when first imported, and this module loads before the settings."""
    from prometheus_client import Histogram

    buckets = settings.METRICS_DURATION_BUCKETS
    duration = Histogram(
        "crux_task_duration_seconds",
        "Run time of task attempts, from the claim to the outcome, by handler, queue and outcome "
        "(completed, failed, retry)",
        ["handler", "queue", "outcome"],
        buckets=buckets,
    )
    wait = Histogram(
        "crux_task_queue_wait_seconds",
        "Time from a task's publish to the claim of its attempt, by handler and queue",
        ["handler", "queue"],
        buckets=buckets,
    )
    return duration, wait


def observe_attempt(sender: Any = None, task: Any = None, **kwargs: Any) -> None:
    """Once an attempt's outcome is committed (``tasks.hooks.attempt_ended``, in the process that ran it): its run
    time and queue wait, from the task as the outcome left it. The wait is known for attempts that completed or
    failed: a retry clears the publish its attempt was claimed from."""
    outcome = {"completed": "completed", "failed": "failed", "queued": "retry"}.get(task.state)
    if task.started_at is None or outcome is None:
        return
    queue = task.queue or settings.CELERY_TASK_DEFAULT_QUEUE
    duration, wait = attempt_histograms()
    ended_at = task.completed_at or task.updated_at
    duration.labels(task.handler, queue, outcome).observe(max(0.0, (ended_at - task.started_at).total_seconds()))
    if outcome != "retry" and task.dispatched_at is not None and task.dispatched_at <= task.started_at:
        wait.labels(task.handler, queue).observe((task.started_at - task.dispatched_at).total_seconds())


@worker_process_init.connect
@worker_ready.connect
def freeze_ready_process(**kwargs: Any) -> None:
    """A pool process, or the worker's main process, is ready: its start-up objects are frozen (``crux.memory``),
    so that no full collection stops a task or the hand-over of messages to walk them."""
    freeze_start_up_objects()


@worker_process_shutdown.connect
def forget_process_gauges(pid: int | None = None, **kwargs: Any) -> None:
    """A pool process ends: its live gauges leave the sums of /metrics (its counters stay: counts never go back)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid(), str(settings.PROMETHEUS_MULTIPROC_DIR))


HOUSEKEEPING_PREFIX = "crux."


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str] | None:
    """Celery's router (``CELERY_TASK_ROUTES``): Crux's own jobs (named ``crux.*``) but task execution go to the
    housekeeping queue; task work and any other application's Celery tasks keep the default queue."""
    if not is_housekeeping(name):
        return None
    return {"queue": settings.CELERY_HOUSEKEEPING_QUEUE}


def is_housekeeping(name: object) -> bool:
    """A Celery task name of Crux's own jobs (the sweeps, reconcile, backup, purge, checkpoints), not task work."""
    from tasks.dispatch import EXECUTE_TASK  # imported late: this module loads before Django's apps

    return isinstance(name, str) and name.startswith(HOUSEKEEPING_PREFIX) and name != EXECUTE_TASK


@celeryd_init.connect
def declare_task_queues(sender: Any = None, **kwargs: Any) -> None:
    """Make every task queue one a worker consumes unless told otherwise (``-Q`` selects, ``-X`` excludes).

    Run when a worker starts, once Django (and so the handlers' declarations) is loaded and before the worker
    selects its queues; the housekeeping queue is not among them."""
    from tasks.services import task_queues  # imported late: this module loads before Django's apps

    for name in task_queues():
        app.amqp.queues.select_add(Queue(name, routing_key=name))


class RequeueOnShutdown(bootsteps.StartStopStep):
    """A consumer step whose ``shutdown`` runs once the worker's pool has stopped, on a warm shutdown and on the
    cold one SIGTERM starts with REMAP_SIGTERM=SIGQUIT (which sends no ``worker_shutdown`` signal): the tasks
    still running under this worker are requeued (``tasks.tasks.requeue_on_worker_shutdown``)."""

    def shutdown(self, c: Any) -> None:
        from tasks.tasks import requeue_on_worker_shutdown  # imported late: this module loads before Django's apps

        requeue_on_worker_shutdown(c.hostname)


app.steps["consumer"].add(RequeueOnShutdown)


class WorkerRegistry(bootsteps.StartStopStep):
    """A consumer step of the worker's main process: every ``WORKER_HEARTBEAT_SECONDS`` it reports this instance to
    the worker registry in SQL (``tasks.services.report_worker``: node name, main pid, queues, concurrency, the pids
    of its pool's processes), one UPDATE per period from the worker's timer, not per task. A clean shutdown marks it
    stopped; a killed worker just stops reporting and the Workers page drops it once its heartbeat is stale. A
    database error is logged and the next period tries again: the registry never stops a worker."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.tref: Any = None
        self.failing = False

    def start(self, c: Any) -> None:
        from tasks import services  # imported late: this module loads before Django's apps

        self._guarded(services.forget_workers, settings.WORKER_FORGET_SECONDS)
        self.beat(c)
        self.tref = c.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, self.beat, (c,))

    def stop(self, c: Any) -> None:
        """The consumer stops (its broker connection is restarted, or the worker shuts down): no more beats."""
        if self.tref is not None:
            c.timer.cancel(self.tref)
            self.tref = None

    def shutdown(self, c: Any) -> None:
        from tasks import services
        from tasks.tasks import WORKER_INSTANCE

        self.stop(c)
        self._guarded(services.stop_worker, c.hostname, int(WORKER_INSTANCE))

    def beat(self, c: Any) -> None:
        from tasks import services
        from tasks.tasks import WORKER_INSTANCE

        info = c.pool.info if c.pool is not None else {}
        report = services.WorkerReport(
            name=c.hostname,
            pid=int(WORKER_INSTANCE),
            hostname=socket.gethostname(),
            queues=list(c.app.amqp.queues.consume_from),
            concurrency=int(info.get("max-concurrency") or 0),
            pool_pids=[int(pid) for pid in info.get("processes", ())],
        )
        self._guarded(services.report_worker, report)

    def _guarded(self, write: Any, *args: Any) -> None:
        """Run one registry write; on failure log it once (until a write succeeds again) and carry on."""
        try:
            write(*args)
        except Exception:
            close_old_connections()  # a broken connection is replaced at the next write
            if not self.failing:
                logger.exception("worker registry: %s failed; retrying every period", write.__name__)
            self.failing = True
            return
        if self.failing:
            logger.warning("worker registry: %s works again", write.__name__)
        self.failing = False


app.steps["consumer"].add(WorkerRegistry)


class QuietHousekeeping(logging.Filter):
    """Drop Celery's own INFO lines about housekeeping jobs (sent by beat, received, succeeded): a 5-second sweep
    would print three lines every 5 seconds. The jobs log themselves when they act; their failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        args = record.args
        names = [args.get("name")] if isinstance(args, dict) else args or ()
        return not any(is_housekeeping(name) for name in names)


# The loggers of beat's "Sending due task", the worker's "received" and the tracer's "succeeded" lines.
CELERY_TASK_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


@setup_logging.connect
def log_through_django(loglevel: int | None = None, **kwargs: Any) -> None:
    """Workers and beat log through Django's LOGGING, whose handler redacts credentials, not handlers of Celery's.

    With a receiver of this signal Celery leaves the root logger alone (its task received/succeeded/failed lines
    reach the redacting handler); ``-l LEVEL`` still sets the level, and what handlers print still goes to the log.
    """
    logging.config.dictConfig(settings.LOGGING)
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).addFilter(QuietHousekeeping())
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    if app.conf.worker_redirect_stdouts:
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)
