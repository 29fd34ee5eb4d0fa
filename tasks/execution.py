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

Time limits (``services.time_limits``: the task's, else its handler's, else the settings'): past the soft
limit the handler is told (``SoftTimeLimitExceeded`` raised in it when it runs in the main thread, as in
Celery's prefork and solo pools; ``ctx.soft_limit_reached`` everywhere); past the hard limit the heartbeat
thread records the attempt as failed (retried or failed by the retry rules), takes the claim away, and ends
the process: Celery's prefork parent starts a new child, and the redelivered message is a duplicate.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from tasks import hooks, services
from tasks.exceptions import ClaimLost, PermanentFailure, Retry, SoftTimeLimitExceeded
from tasks.models import Task, TaskOutput
from tasks.registry import get_handler

logger = logging.getLogger(__name__)


def end_process() -> None:
    """Leave at once: Celery's parent sees a lost worker and the message is redelivered (and ignored).

    Called when the attempt lost its claim or passed its hard time limit (the outcome is recorded by then)."""
    logging.shutdown()
    os._exit(70)


# Outputs waiting to be written that are written at once, whatever their age: so many, or so many characters.
OUTPUT_BATCH_MAX = 100
OUTPUT_BATCH_CHARS = 1_000_000


class TaskContext:
    """What a handler may do while it runs: report progress, append outputs, record metrics.

    Each call writes only while the attempt holds its claim; after the claim is
    lost (seen by a write or by the heartbeat) every call raises ``ClaimLost``.
    A long handler polls ``soft_limit_reached`` to wind down before its hard limit.

    An output is checked (its fields, the claim as committed) when the handler appends it, and written with the
    attempt's next write: its progress, its metrics, its outcome, in their transaction, or by the heartbeat
    thread once it has waited ``TASK_OUTPUT_FLUSH_SECONDS`` (at once past ``OUTPUT_BATCH_MAX`` outputs or
    ``OUTPUT_BATCH_CHARS`` characters, or with the setting at 0). A short task's output thus commits with its
    outcome, and a handler that writes many lines commits them in batches, not one transaction (and on SQLite
    one turn of the write lock every writer waits for) each.
    """

    def __init__(self, task: Task, worker_id: str, limits: services.TimeLimits | None = None):
        self.task_id = task.pk
        self.attempt = task.attempt_count
        self.worker_id = worker_id
        self.title = task.title
        self.limits = limits or services.TimeLimits()
        self.started = time.monotonic()
        self.claim_lost = threading.Event()
        # What this attempt wrote to the task row since its claim (progress, phase, figures; untracked fields): the
        # claim's values with these are the row its outcome is a compare-and-set on (``services.finish_attempt``).
        self.written: dict[str, Any] = {}
        self._outputs: list[services.PreparedOutput] = []  # appended, not written yet, in their order
        self._outputs_since: float | None = None  # when the first of them was appended
        self._outputs_lock = threading.RLock()  # held while outputs are taken and written: they commit in order
        self.wake = threading.Event()  # set when outputs start waiting: the heartbeat thread's cue to write them

    def elapsed(self) -> float:
        """Seconds since the attempt started."""
        return time.monotonic() - self.started

    @property
    def soft_limit_reached(self) -> bool:
        """Whether the attempt has run past its soft time limit: clean up and return (or raise)."""
        return self.limits.soft is not None and self.elapsed() >= self.limits.soft

    def _guarded(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.claim_lost.is_set():
            raise ClaimLost(f"task {self.task_id} attempt {self.attempt} lost its claim: stop")
        try:
            return write(self.task_id, *args, attempt=self.attempt, worker_id=self.worker_id, **kwargs)
        except ClaimLost:
            self.claim_lost.set()
            raise

    def progress(self, fraction: float, phase: str | None = None) -> None:
        with self._writing_outputs() as outputs:
            self.written.update(
                self._guarded(services.report_progress, progress=fraction, phase=phase, outputs=outputs)
            )

    def output(self, output_type: str, content: str, **meta: Any) -> TaskOutput:
        """Append an output (its id is set once it is written)."""
        prepared: services.PreparedOutput = self._guarded(services.prepare_output, output_type, content, **meta)
        with self._outputs_lock:
            self._outputs.append(prepared)
            if self._outputs_since is None:
                self._outputs_since = time.monotonic()
                self.wake.set()
            if (
                settings.TASK_OUTPUT_FLUSH_SECONDS <= 0
                or len(self._outputs) >= OUTPUT_BATCH_MAX
                or sum(len(waiting.output.content) for waiting in self._outputs) >= OUTPUT_BATCH_CHARS
            ):
                self.write_outputs()
        return prepared.output

    def metrics(self, **fields: Any) -> None:
        with self._writing_outputs() as outputs:
            self.written.update(self._guarded(services.record_metrics, outputs=outputs, **fields))

    def outputs_due_in(self) -> float | None:
        """Seconds until the waiting outputs are to be written (0: now), or None when none waits."""
        since = self._outputs_since
        if since is None:
            return None
        return max(0.0, since + settings.TASK_OUTPUT_FLUSH_SECONDS - time.monotonic())

    def take_outputs(self) -> list[services.PreparedOutput]:
        """The waiting outputs, no longer waiting: for the outcome, which writes them in its transaction."""
        with self._outputs_lock:
            taken, self._outputs, self._outputs_since = self._outputs, [], None
            return taken

    def write_outputs(self) -> None:
        """Write the waiting outputs now, in a transaction of their own."""
        with self._writing_outputs() as outputs:
            self._guarded(services.record_outputs, outputs)

    @contextmanager
    def _writing_outputs(self) -> Iterator[list[services.PreparedOutput]]:
        """The waiting outputs, taken for a write made inside the block (with no other write of them meanwhile);
        put back first in line if it fails for any reason but a lost claim (which refuses them for good)."""
        with self._outputs_lock:
            taken = self.take_outputs()
            try:
                yield taken
            except ClaimLost:
                raise
            except BaseException:
                if taken:
                    self._outputs[:0] = taken
                    self._outputs_since = time.monotonic()  # tried again a flush period from now
                raise


class Heartbeat:
    """Renews one attempt's lease every quarter lease and writes its outputs once they are due
    (``TaskContext.outputs_due_in``); calls ``on_lost`` when the claim is gone or too stale, or once the attempt
    passed its hard time limit (recorded first, with the outputs still waiting: ``terminated`` holds the outcome).

    It runs in the executing thread's ``HeartbeatThread``, which takes it up within
    ``HeartbeatThread.PICKUP_SECONDS`` of ``start()``, until ``stop()`` returns: its times are reckoned from its
    start (the claim), whenever it is taken up."""

    def __init__(self, ctx: TaskContext, on_lost: Callable[[], None]):
        self.ctx = ctx
        self.on_lost = on_lost
        self.stopped = threading.Event()
        self.interval = settings.TASK_LEASE_SECONDS / 4
        self.terminated: Task | None = None
        self.acting = threading.Condition()  # held to start, and to end, a renewal or a termination
        self.busy = False
        self.last_renewal = time.monotonic()  # the claim's lease, just written
        self.next_renewal = self.last_renewal + self.interval
        self.outputs_retry_at = 0.0  # after a failed write of the outputs, none is tried again before this

    def _next_wait(self) -> float:
        waits = [self.next_renewal - time.monotonic()]
        if self.ctx.limits.hard is not None:
            waits.append(self.ctx.limits.hard - self.ctx.elapsed())
        outputs_due = self._outputs_due_in()
        if outputs_due is not None:
            waits.append(outputs_due)
        return max(0.0, min(waits))

    def _outputs_due_in(self) -> float | None:
        """Seconds until the waiting outputs are to be written by this thread (after a failed write, not before
        ``outputs_retry_at``), or None when none waits."""
        due = self.ctx.outputs_due_in()
        return None if due is None else max(due, self.outputs_retry_at - time.monotonic(), 0.0)

    def _past_hard_limit(self) -> bool:
        hard = self.ctx.limits.hard
        return hard is not None and self.ctx.elapsed() >= hard

    def _terminate(self) -> None:
        """Record the attempt as failed by its hard limit, take its claim away, end it (unless it finished first:
        the outcome is a compare-and-set, and a finished attempt has stopped this thread before writing its own)."""
        hard = self.ctx.limits.hard
        elapsed = self.ctx.elapsed()
        try:
            self.terminated = services.finish_attempt(
                self.ctx.task_id,
                attempt=self.ctx.attempt,
                worker_id=self.ctx.worker_id,
                error=f"hard time limit of {hard:g}s exceeded: attempt terminated",
                metrics={"processing_time_seconds": round(elapsed, 6)},
                outputs=self.ctx.take_outputs(),
            )
        except Exception:
            logger.exception("recording the hard time limit of task %s failed", self.ctx.task_id)
            close_old_connections()
        if self.terminated is None and self.stopped.is_set():
            return
        logger.error(
            "task %s attempt %s passed its hard time limit of %gs: terminated (%s)",
            self.ctx.task_id,
            self.ctx.attempt,
            hard,
            self.terminated.state if self.terminated else "outcome not recorded",
        )
        self.ctx.claim_lost.set()
        self.on_lost()

    def keep(self) -> None:
        """The renewals and output writes, in the heartbeat thread, until ``stop()`` (or the claim is lost, or the
        hard limit passed)."""
        while True:
            self.ctx.wake.clear()  # before the wait is reckoned: outputs appended (or a stop) from now on end it
            if self.stopped.is_set():
                return
            self.ctx.wake.wait(self._next_wait())
            with self.acting:
                if self.stopped.is_set():
                    return
                self.busy = True
            try:
                if not self._act():
                    return
            finally:
                with self.acting:
                    self.busy = False
                    self.acting.notify_all()

    def _act(self) -> bool:
        """What is due: the termination past the hard limit, the outputs' write, the renewal; False once the
        attempt is over for this thread."""
        if self._past_hard_limit():
            self._terminate()
            return False
        if self._outputs_due_in() == 0 and not self._write_outputs():
            return False
        if time.monotonic() >= self.next_renewal:
            return self._beat()
        return True

    def _write_outputs(self) -> bool:
        """Write the outputs that waited long enough; False if the claim is lost (the attempt is then stopped)."""
        try:
            self.ctx.write_outputs()
        except ClaimLost:
            return self._lost("claim gone")
        except Exception:
            logger.exception("writing the outputs of task %s failed; trying again in a quarter lease", self.ctx.task_id)
            close_old_connections()
            self.outputs_retry_at = time.monotonic() + self.interval
        return True

    def _lost(self, why: str) -> bool:
        """The claim is gone (or can no longer be renewed): stop the attempt, unless it has ended already."""
        if self.stopped.is_set():
            return False
        logger.error(
            "task %s attempt %s lost its lease (%s); stopping this execution", self.ctx.task_id, self.ctx.attempt, why
        )
        self.ctx.claim_lost.set()
        self.on_lost()
        return False

    def _beat(self) -> bool:
        """One renewal (the next a quarter lease later, whether it worked or not); False once the attempt is over
        for this thread."""
        self.next_renewal = time.monotonic() + self.interval
        try:
            renewed = services.renew_lease(self.ctx.task_id, attempt=self.ctx.attempt, worker_id=self.ctx.worker_id)
        except Exception:
            logger.exception("lease renewal of task %s failed", self.ctx.task_id)
            renewed = None
            close_old_connections()
        if renewed:
            self.last_renewal = time.monotonic()
            return True
        stale = time.monotonic() - self.last_renewal > settings.TASK_LEASE_SECONDS * 0.75
        if renewed is False or stale:
            return self._lost("claim gone" if renewed is False else "renewal failing")
        return True

    def start(self) -> None:
        self.thread = HeartbeatThread.of_this_thread()
        self.thread.watch(self)

    def stop(self) -> None:
        """Once this returns, nothing more runs for the attempt: a renewal or a termination in flight has ended
        (waited for up to a quarter lease and 5 s, as a join would); none starts after it."""
        self.thread.withdraw(self)
        with self.acting:
            self.stopped.set()
            self.ctx.wake.set()
            self.acting.wait_for(lambda: not self.busy, timeout=self.interval + 5)


class HeartbeatThread(threading.Thread):
    """The thread that runs the heartbeats of one executing thread's attempts, one after the other (a worker's pool
    process runs one attempt at a time): started with the first attempt and kept for the next ones. A thread
    started and joined per attempt cost milliseconds a task on a busy machine, both waiting for the scheduler;
    the attempt's end waits for it only while it renews the lease or terminates the attempt.

    While attempts follow one another, it looks for a new heartbeat every ``PICKUP_SECONDS`` instead of being woken
    for each: an attempt that ends first (most of a busy queue's take milliseconds) withdraws its heartbeat
    untouched. Woken to take a heartbeat up and again to drop it, the thread took the interpreter's lock from the
    attempt twice a task, a tenth of an echo task's processor time. After ``IDLE_SECONDS`` with no attempt, it
    waits without a timeout, and the next attempt wakes it."""

    PICKUP_SECONDS = 0.05
    IDLE_SECONDS = 1.0

    _local = threading.local()

    def __init__(self) -> None:
        super().__init__(name=f"heartbeat-of-{threading.current_thread().name}", daemon=True)
        self.changed = threading.Condition()
        self.pending: Heartbeat | None = None
        self.asleep = False  # waiting without a timeout: a new heartbeat wakes it

    @classmethod
    def of_this_thread(cls) -> HeartbeatThread:
        """The calling thread's heartbeat thread, started if there is none (or it did not survive a fork)."""
        thread: HeartbeatThread | None = getattr(cls._local, "thread", None)
        if thread is None or not thread.is_alive():
            thread = cls._local.thread = cls()
            thread.start()
        return thread

    def watch(self, heartbeat: Heartbeat) -> None:
        with self.changed:
            self.pending = heartbeat
            if self.asleep:
                self.changed.notify()

    def withdraw(self, heartbeat: Heartbeat) -> None:
        """Take back a heartbeat this thread has not taken up yet (an attempt that ended first)."""
        with self.changed:
            if self.pending is heartbeat:
                self.pending = None

    def run(self) -> None:
        while True:
            with self.changed:
                idle_since = time.monotonic()
                while self.pending is None:
                    self.asleep = time.monotonic() - idle_since >= self.IDLE_SECONDS
                    self.changed.wait(None if self.asleep else self.PICKUP_SECONDS)
                self.asleep = False
                heartbeat, self.pending = self.pending, None
            try:
                heartbeat.keep()
            except Exception:
                logger.exception("heartbeat of task %s failed", heartbeat.ctx.task_id)
            finally:
                connection.close()  # no connection held between attempts


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in the handler ``seconds`` from now (a SIGALRM timer, as Celery's pools do),
    when it runs in the main thread (signals reach no other); the timer and the previous handler of SIGALRM are
    restored on the way out, whatever happens."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds:g}s exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:4000]


def execute(
    task_id: str,
    *,
    worker_id: str,
    on_lease_lost: Callable[[], None] = end_process,
    in_transaction: Callable[[Task], None] | None = None,
) -> str:
    """Run one delivery of a task; returns what happened (skipped, completed, failed, queued for a retry, discarded).

    ``on_lease_lost`` ends the execution when its claim is lost or its hard time limit passed (the process, in a
    worker; tests pass their own). ``in_transaction`` is called with the task inside the outcome's transaction, once
    it has applied its change (the worker writes Celery's result row there).

    A handler error is retried by the task's rules (``services.finish_attempt``); a handler raises
    ``PermanentFailure`` to fail at once, or ``Retry`` to come back at a time of its choosing.

    A handler that lost its claim (``ClaimLost`` from the context, or the heartbeat
    saw it) is discarded: no outcome and no figures are written for it.
    """
    task = services.claim(task_id, worker_id=worker_id)
    if task is None:
        return "skipped"
    limits = services.time_limits(task)
    ctx = TaskContext(task, worker_id, limits)
    heartbeat = Heartbeat(ctx, on_lease_lost)
    heartbeat.start()
    started = time.perf_counter()
    result: Any = None
    error = ""
    retry_at: datetime | None = None
    permanent = False
    try:
        handler = get_handler(task.handler)
        with soft_time_limit(limits.soft):
            # The handler's own copy: the task's values stay the claim's, which the outcome is a compare-and-set on.
            result = handler(ctx, copy.deepcopy(task.request_payload))
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
    if heartbeat.terminated is not None:
        return heartbeat.terminated.state
    if ctx.claim_lost.is_set():
        return "discarded"
    elapsed = time.perf_counter() - started
    outputs = ctx.take_outputs()  # the heartbeat has stopped: nothing else writes them now
    for name, value in ctx.written.items():
        setattr(task, name, value)  # the row as committed: the claim's values and this attempt's writes since
    outcome = services.finish_attempt(
        task.pk,
        attempt=task.attempt_count,
        worker_id=worker_id,
        result=result,
        error=error,
        retry_at=retry_at,
        permanent=permanent,
        metrics={"processing_time_seconds": round(elapsed, 6)},
        in_transaction=in_transaction,
        claimed=task,
        outputs=outputs,
    )
    if outcome is None:
        return "discarded"
    hooks.attempt_ended.send(sender=Task, task=outcome)
    return outcome.state
