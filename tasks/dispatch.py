"""Publishing to and revoking from Celery. Failures are logged and counted, never raised:
the task is already committed in SQL, and the re-dispatch sweep publishes it again.

Messages are sent by task name (``EXECUTE_TASK``, defined in ``tasks.tasks``),
so the writes that publish do not import the worker code that runs them.
"""

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from celery import current_app
from django.conf import settings
from django.dispatch import Signal
from kombu import Queue
from prometheus_client import Counter

logger = logging.getLogger(__name__)

EXECUTE_TASK = "crux.execute_task"
PUBLISH_FAILURES = Counter("crux_publish_failures_total", "Celery publishes that failed (the sweep retries them)")
PUBLISHED = Counter("crux_published_total", "Tasks published to Celery")
# Sent with ``task_ids`` (the Crux ids) once their messages reached the broker: after a batch's pipeline was sent,
# never when a message is only buffered (Celery's ``after_task_publish`` fires then).
published = Signal()
_DECLARE: list[Queue] | None = [] if settings.BROKER_IS_REDIS else None


def broker_priority(priority: int) -> int:
    """The message priority that makes the broker serve Crux's priorities (0-9, higher first) in order: the one
    mapping of the scales. RabbitMQ serves a higher number first too (queues declared with x-max-priority,
    CELERY_TASK_QUEUE_MAX_PRIORITY); kombu's Redis transport serves a lower one first (a list per step of
    CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"], popped in that order), so there the scale is reversed."""
    top: int = settings.CELERY_TASK_QUEUE_MAX_PRIORITY
    return top - priority if settings.BROKER_IS_REDIS else priority


class Publish(NamedTuple):
    """One publish of a task: what ``mark_published`` recorded and where it goes."""

    task_id: Any
    celery_task_id: str
    queue: str  # '' = the default queue
    priority: int


def publish_all(publishes: Sequence[Publish]) -> bool:
    """Send each task to a worker of its queue with its priority, through one producer and, on Redis, in one
    pipelined round trip (kombu's ``Producer.batch()``, flushed at its end). True if all were sent.

    Each message is what ``send_task`` would send (Celery's own ``create_task_message`` and
    ``send_task_message``, whose publish signals fire as ever), with the route of each queue looked up once per
    call instead of once per message: ``send_task``'s own bookkeeping (options merged from the task registry,
    the current worker task as parent, the repr of the arguments) cost more than the message itself, and
    none of it applies to a task id sent by name. On Redis, a message goes straight onto its queue's list for
    its priority, so the queue is not declared again on every publish (kombu would copy and re-bind its
    entities each time); other brokers declare it as usual.
    """
    amqp = current_app.amqp
    routes: dict[str, Any] = {}
    try:
        with current_app.producer_or_acquire() as producer, producer.batch():
            for item in publishes:
                route = routes.get(item.queue)
                if route is None:  # None: Celery's default queue (task_default_queue)
                    route = routes[item.queue] = amqp.router.route({"queue": item.queue or None}, EXECUTE_TASK)
                task_id = str(item.task_id)
                message = amqp.create_task_message(
                    item.celery_task_id, EXECUTE_TASK, [task_id], {}, argsrepr=f"['{task_id}']", kwargsrepr="{}"
                )
                amqp.send_task_message(
                    producer,
                    EXECUTE_TASK,
                    message,
                    priority=broker_priority(item.priority),
                    declare=_DECLARE,
                    **route,
                )
    except Exception as exc:  # any broker error: SQL stays the outbox
        PUBLISH_FAILURES.inc(len(publishes))
        names = publishes[0].task_id if len(publishes) == 1 else f"{publishes[0].task_id} and {len(publishes) - 1} more"
        logger.warning("publish of task %s failed; the re-dispatch sweep will retry: %s", names, exc)
        return False
    PUBLISHED.inc(len(publishes))
    published.send(sender=EXECUTE_TASK, task_ids=[item.task_id for item in publishes])
    return True


def revoke(celery_task_id: str, *, terminate: bool) -> None:
    """Ask workers to drop (or, if running, terminate) the execution of one publish of a task."""
    try:
        current_app.control.revoke(celery_task_id, terminate=terminate, signal="SIGTERM")
    except Exception as exc:  # the claim/finish compare-and-set still stops a late run
        logger.warning("revoke of Celery task %s failed: %s", celery_task_id, exc)
