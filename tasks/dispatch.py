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


def publish(task_id: Any) -> bool:
    """Send the task to a worker; the Celery task id is the task's own id.

    On Redis, a message for the default queue goes straight onto its list, so
    the queue is not declared again on every publish (kombu would copy and
    re-bind its entities each time); other brokers declare it as usual.
    """
    try:
        current_app.send_task(EXECUTE_TASK, args=[str(task_id)], task_id=str(task_id), declare=_DECLARE)
    except Exception as exc:  # any broker error: SQL stays the outbox
        PUBLISH_FAILURES.inc()
        logger.warning("publish of task %s failed; the re-dispatch sweep will retry: %s", task_id, exc)
        return False
    PUBLISHED.inc()
    return True


def revoke(task_id: Any, *, terminate: bool) -> None:
    """Ask workers to drop (or, if running, terminate) the task's execution."""
    try:
        current_app.control.revoke(str(task_id), terminate=terminate, signal="SIGTERM")
    except Exception as exc:  # the claim/finish compare-and-set still stops a late run
        logger.warning("revoke of task %s failed: %s", task_id, exc)
