"""Running one attempt of a task: claim, heartbeat, handler, outcome.

The claim and the outcome are compare-and-set writes through tasks.services, so
a duplicate delivery does nothing and a late outcome is discarded. Every write a
handler makes through its context (progress, outputs, metrics) is conditional
on the attempt still holding its claim: once the claim is lost (the task was
cancelled, or recovered after the worker stalled past its lease), the next call
into the context raises ``ClaimLost`` and the handler stops, having written
nothing after the takeover. While the handler runs, a heartbeat thread renews
the lease; if the claim is lost or cannot be renewed in time, the process ends
itself so the same task never runs in two places at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from tasks import services
from tasks.exceptions import ClaimLost, PermanentFailure, Retry
from tasks.models import Task, TaskOutput
from tasks.registry import get_handler

logger = logging.getLogger(__name__)


def end_process() -> None:
    """Leave at once: Celery's parent sees a lost worker and the message is redelivered (and ignored)."""
    logging.shutdown()
    os._exit(70)


class TaskContext:
    """What a handler may do while it runs: report progress, append outputs, record metrics.

    Each call writes only while the attempt holds its claim; after the claim is
    lost (seen by a write or by the heartbeat) every call raises ``ClaimLost``.
    """

    def __init__(self, task: Task, worker_id: str):
        self.task_id = task.pk
        self.attempt = task.attempt_count
        self.worker_id = worker_id
        self.title = task.title
        self.claim_lost = threading.Event()

    def _guarded(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.claim_lost.is_set():
            raise ClaimLost(f"task {self.task_id} attempt {self.attempt} lost its claim: stop")
        try:
            return write(self.task_id, *args, attempt=self.attempt, worker_id=self.worker_id, **kwargs)
        except ClaimLost:
            self.claim_lost.set()
            raise

    def progress(self, fraction: float, phase: str | None = None) -> None:
        self._guarded(services.report_progress, progress=fraction, phase=phase)

    def output(self, output_type: str, content: str, **meta: Any) -> TaskOutput:
        output: TaskOutput = self._guarded(services.record_output, output_type, content, **meta)
        return output

    def metrics(self, **fields: Any) -> None:
        self._guarded(services.record_metrics, **fields)


class Heartbeat(threading.Thread):
    """Renews the lease every quarter lease; calls ``on_lost`` when the claim is gone or too stale."""

    def __init__(self, ctx: TaskContext, on_lost: Callable[[], None]):
        super().__init__(name=f"heartbeat-{ctx.task_id}", daemon=True)
        self.ctx = ctx
        self.on_lost = on_lost
        self.stopped = threading.Event()
        self.interval = settings.TASK_LEASE_SECONDS / 4

    def run(self) -> None:
        last_renewal = time.monotonic()
        try:
            while not self.stopped.wait(self.interval):
                try:
                    renewed = services.renew_lease(
                        self.ctx.task_id, attempt=self.ctx.attempt, worker_id=self.ctx.worker_id
                    )
                except Exception:
                    logger.exception("lease renewal of task %s failed", self.ctx.task_id)
                    renewed = None
                    close_old_connections()
                if renewed:
                    last_renewal = time.monotonic()
                    continue
                stale = time.monotonic() - last_renewal > settings.TASK_LEASE_SECONDS * 0.75
                if renewed is False or stale:
                    if self.stopped.is_set():
                        return
                    logger.error(
                        "task %s attempt %s lost its lease (%s); stopping this execution",
                        self.ctx.task_id,
                        self.ctx.attempt,
                        "claim gone" if renewed is False else "renewal failing",
                    )
                    self.ctx.claim_lost.set()
                    self.on_lost()
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.interval + 5)


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:4000]


def execute(task_id: str, *, worker_id: str, on_lease_lost: Callable[[], None] = end_process) -> str:
    """Run one delivery of a task; returns what happened (skipped, completed, failed, queued for a retry, discarded).

    A handler error is retried by the task's rules (``services.finish_attempt``); a handler raises
    ``PermanentFailure`` to fail at once, or ``Retry`` to come back at a time of its choosing.

    A handler that lost its claim (``ClaimLost`` from the context, or the heartbeat
    saw it) is discarded: no outcome and no figures are written for it.
    """
    task = services.claim(task_id, worker_id=worker_id)
    if task is None:
        return "skipped"
    ctx = TaskContext(task, worker_id)
    heartbeat = Heartbeat(ctx, on_lease_lost)
    heartbeat.start()
    started = time.perf_counter()
    result: Any = None
    error = ""
    retry_at: datetime | None = None
    permanent = False
    try:
        handler = get_handler(task.handler)
        result = handler(ctx, dict(task.request_payload))
        json.dumps(result)
    except ClaimLost as exc:
        ctx.claim_lost.set()
        logger.warning("task %s attempt %s stopped: %s", task.pk, task.attempt_count, exc)
    except Retry as exc:
        error, retry_at = _describe(exc), exc.at
        logger.info("task %s attempt %s asks for a retry at %s: %s", task.pk, task.attempt_count, exc.at, error)
    except PermanentFailure as exc:
        error, permanent = _describe(exc), True
        logger.warning("task %s attempt %s failed permanently: %s", task.pk, task.attempt_count, error)
    except Exception as exc:
        error = _describe(exc)
        logger.warning("task %s attempt %s failed: %s", task.pk, task.attempt_count, error)
    finally:
        heartbeat.stop()
    if ctx.claim_lost.is_set():
        return "discarded"
    elapsed = time.perf_counter() - started
    outcome = services.finish_attempt(
        task.pk,
        attempt=task.attempt_count,
        worker_id=worker_id,
        result=result,
        error=error,
        retry_at=retry_at,
        permanent=permanent,
        metrics={"processing_time_seconds": round(elapsed, 6)},
    )
    if outcome is None:
        return "discarded"
    return outcome.state
