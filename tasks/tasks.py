"""Celery tasks of the domain: the execution of Crux tasks, the audit checkpoint, and the recovery of a restarted
worker's own tasks.

Every task but the execution runs on the housekeeping queue (``crux.celery.route_task``), stores no result row
(``ignore_result``: the Task table and its history are the ledger) and logs only when it acted; the periodic sweep
that heals lost work is ``persistence.tasks.recovery_sweep``: it needs the broker's epoch.
"""

import logging
import os
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from tasks import checkpoints, execution, services
from tasks.dispatch import EXECUTE_TASK

logger = logging.getLogger(__name__)


@shared_task(name=EXECUTE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_task(self: Any, task_id: str) -> str:
    return execution.execute(task_id, worker_id=f"{self.request.hostname}:{os.getpid()}")


@shared_task(name="crux.audit_checkpoint", ignore_result=True)
def audit_checkpoint() -> str:
    """Write a signed checkpoint of every chain head outside the database (verify_audit compares against it)."""
    written = checkpoints.write_checkpoint()
    logger.info("audit checkpoint written: %s (%s tasks)", written.path, written.tasks)
    return str(written.path)


@worker_ready.connect
def recover_on_worker_start(sender: Any, **kwargs: Any) -> None:
    """Tasks this worker held before it restarted cannot be running any more."""
    counts = services.recover_orphans(worker_prefix=f"{sender.hostname}:")
    if any(counts.values()):
        logger.warning("startup recovery of %s: %s", sender.hostname, counts)
