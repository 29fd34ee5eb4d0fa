"""Publishing to and revoking from Celery. Failures are logged and counted, never raised:
the task is already committed in SQL, and the re-dispatch sweep publishes it again.

Messages are sent by task name (``EXECUTE_TASK``, defined in ``tasks.tasks``),
so the writes that publish do not import the worker code that runs them.
"""

import logging
from typing import Any

from celery import current_app
from django.conf import settings
from kombu import Queue
from prometheus_client import Counter

logger = logging.getLogger(__name__)

EXECUTE_TASK = "crux.execute_task"
PUBLISH_FAILURES = Counter("crux_publish_failures_total", "Celery publishes that failed (the sweep retries them)")
PUBLISHED = Counter("crux_published_total", "Tasks published to Celery")
_DECLARE: list[Queue] | None = [] if settings.BROKER_IS_REDIS else None


def broker_priority(priority: int) -> int:
    """The message priority that makes the broker serve Crux's priorities (0-9, higher first) in order: the one
    mapping of the scales. RabbitMQ serves a higher number first too (queues declared with x-max-priority,
    CELERY_TASK_QUEUE_MAX_PRIORITY); kombu's Redis transport serves a lower one first (a list per step of
    CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"], popped in that order), so there the scale is reversed."""
    top: int = settings.CELERY_TASK_QUEUE_MAX_PRIORITY
    return top - priority if settings.BROKER_IS_REDIS else priority


def celery_id(task_id: Any, dispatch_count: int) -> str:
    """The Celery task id of a task's ``dispatch_count``-th publish: each publish its own, so a revoked id (workers
    remember them, across restarts with ``--statedb``) never discards a later publish of the same task."""
    return f"{task_id}.{dispatch_count}"


def task_id_of(celery_task_id: str) -> str:
    """The Crux task id a Celery task id of ``celery_id`` names (a bare task id, as older publishes used, too)."""
    return celery_task_id.partition(".")[0]


def publish(task_id: Any, *, celery_task_id: str, queue: str, priority: int) -> bool:
    """Send the task to a worker of ``queue`` ('' = the default queue) with its priority.

    On Redis, a message goes straight onto its queue's list for its priority,
    so the queue is not declared again on every publish (kombu would copy and
    re-bind its entities each time); other brokers declare it as usual.
    """
    try:
        current_app.send_task(
            EXECUTE_TASK,
            args=[str(task_id)],
            task_id=celery_task_id,
            queue=queue or None,  # None: Celery's default queue (task_default_queue)
            priority=broker_priority(priority),
            declare=_DECLARE,
        )
    except Exception as exc:  # any broker error: SQL stays the outbox
        PUBLISH_FAILURES.inc()
        logger.warning("publish of task %s failed; the re-dispatch sweep will retry: %s", task_id, exc)
        return False
    PUBLISHED.inc()
    return True


def revoke(celery_task_id: str, *, terminate: bool) -> None:
    """Ask workers to drop (or, if running, terminate) the execution of one publish of a task."""
    try:
        current_app.control.revoke(celery_task_id, terminate=terminate, signal="SIGTERM")
    except Exception as exc:  # the claim/finish compare-and-set still stops a late run
        logger.warning("revoke of Celery task %s failed: %s", celery_task_id, exc)
