"""Celery tasks: execution of Crux tasks and the periodic sweeps that heal lost work."""

import logging
import os
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from tasks import execution, services
from tasks.dispatch import EXECUTE_TASK

logger = logging.getLogger(__name__)


@shared_task(name=EXECUTE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_task(self: Any, task_id: str) -> str:
    return execution.execute(task_id, worker_id=f"{self.request.hostname}:{os.getpid()}")


@shared_task(name="crux.recovery_sweep")
def recovery_sweep() -> dict[str, int]:
    """Interrupt tasks whose worker is gone and re-publish queued tasks whose message was lost."""
    counts = services.recover_orphans()
    counts["redispatched"] = services.redispatch_stale()
    if any(counts.values()):
        logger.warning("recovery sweep: %s", counts)
    return counts


@worker_ready.connect
def recover_on_worker_start(sender: Any, **kwargs: Any) -> None:
    """Tasks this worker held before it restarted cannot be running any more."""
    counts = services.recover_orphans(worker_prefix=f"{sender.hostname}:")
    logger.info("startup recovery of %s: %s", sender.hostname, counts)
