"""Handlers used by the tests only (registered through TASK_HANDLERS_EXTRA or settings)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import PermanentFailure, Retry
from tasks.registry import options


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def record_execution(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Log each execution to a shared file; flag any earlier execution of this task still alive. It lasts
    ``duration`` seconds, or until the file ``until`` exists."""
    log = payload["log"]
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                kind, task_id, _attempt, pid = line.split()[:4]
                if kind == "start" and task_id == str(ctx.task_id) and int(pid) != os.getpid() and _alive(int(pid)):
                    _append(log, f"OVERLAP {ctx.task_id} {ctx.attempt} {os.getpid()} with {pid}")
    _append(log, f"start {ctx.task_id} {ctx.attempt} {os.getpid()}")
    deadline = time.monotonic() + float(payload.get("duration", 0.1))
    gate = payload.get("until")  # a file the test creates to end the run early: no race with a loaded machine
    while time.monotonic() < deadline and not (gate and os.path.exists(gate)):
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    _append(log, f"end {ctx.task_id} {ctx.attempt} {os.getpid()}")
    return {"attempt": ctx.attempt}


def crash_worker(ctx: Any, payload: dict[str, Any]) -> None:
    """A poison pill: kills the process running it, on every attempt."""
    os.kill(os.getpid(), signal.SIGKILL)


def cancel_myself(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Cancels its own task mid-run, then keeps working as a handler unaware of it would."""
    services.cancel(ctx.task_id, actor="system:test", channel=Channel.SYSTEM, reason="cancel while running")
    time.sleep(float(payload.get("linger", 0.0)))
    ctx.progress(0.5, phase="after cancel")
    return {"should": "be discarded"}


def taken_over_midway(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Writes once; then its attempt is taken over (as when its worker stalls past its lease: the sweep recovers
    the task and another worker claims it); then it keeps writing as a handler unaware of it would.

    Each write refused with ClaimLost is logged to ``payload["log"]``; with ``swallow`` the handler catches
    the refusals and carries on, without it the first refusal ends the handler.
    """
    from datetime import timedelta

    from django.utils import timezone

    from tasks.exceptions import ClaimLost
    from tasks.models import Task

    ctx.output("log", "before the takeover")
    ctx.progress(0.25, phase="before the takeover")
    Task.objects.filter(pk=ctx.task_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.recover_orphans()
    services.claim(ctx.task_id, worker_id=payload["successor"])
    writes = {
        "output": lambda: ctx.output("log", "after the takeover"),
        "progress": lambda: ctx.progress(0.75, phase="after the takeover"),
        "metrics": lambda: ctx.metrics(iterations=99, stop_reason="stale"),
    }
    for name, write in writes.items():
        try:
            write()
        except ClaimLost:
            _append(payload["log"], f"refused {name}")
            if not payload.get("swallow"):
                raise
        else:
            _append(payload["log"], f"written {name}")
    return {"should": "be discarded"}


def stall_once(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Each step writes an output, progress and metrics; attempt 1 waits before step ``pause_at`` until the file
    ``resume`` exists (the test pauses its process meanwhile), then carries on as if nothing happened.

    Logs each step written, the pause and a ClaimLost stop to ``payload["log"]``.
    """
    from tasks.exceptions import ClaimLost

    log, steps = payload["log"], int(payload["steps"])
    try:
        for step in range(steps):
            if ctx.attempt == 1 and step == payload["pause_at"]:
                _append(log, f"pausing {ctx.attempt} {os.getpid()}")
                while not os.path.exists(payload["resume"]):
                    time.sleep(0.02)
            ctx.output("log", f"attempt {ctx.attempt} step {step}")
            ctx.progress(step / steps, phase=f"attempt {ctx.attempt} step {step}")
            ctx.metrics(iterations=step, stop_reason=f"attempt {ctx.attempt}")
            _append(log, f"wrote {ctx.attempt} {step}")
            time.sleep(float(payload.get("interval", 0.05)))
    except ClaimLost:
        _append(log, f"stopped {ctx.attempt} {os.getpid()}")
        raise
    return {"attempt": ctx.attempt}


def ticker(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A task to watch live: each of its ``steps`` (default 10) writes an output line and its progress, then waits
    ``interval`` seconds (default 0.3). With ``gate``, it holds after its first step until that file exists."""
    steps = int(payload.get("steps", 10))
    for step in range(1, steps + 1):
        ctx.output("stdout", f"tick {step} of {steps}")
        ctx.progress(step / steps, phase=f"step {step} of {steps}")
        while step == 1 and payload.get("gate") and not os.path.exists(payload["gate"]):
            time.sleep(0.05)
        time.sleep(float(payload.get("interval", 0.3)))
    return {"ticks": steps}


def leak_secrets(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Sends every credential shape through each channel a handler has: progress, outputs, metrics, logs, stdout,
    its result, and (with ``fail``) its error. None of it may be stored or logged as sent."""
    import logging

    from tests.credentials import SHAPES

    texts = [f"{payload['marker']} {text}" for _, text, _ in SHAPES]
    for number, text in enumerate(texts, 1):
        ctx.progress(number / (len(texts) + 1), phase=text)
        ctx.output("log", text, file_path=f"logs/{text[:200]}")
    ctx.metrics(stop_reason="stopped sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH")
    logging.getLogger("tests.handlers").warning("handler log: %s", "\n".join(texts))
    print("handler stdout:", "\n".join(texts), flush=True)
    if payload.get("fail"):
        raise PermanentFailure("\n".join(texts)[:3000])
    return {"leaked": texts, "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


@options(retry_backoff=0.2)  # a handler's own default backoff, in seconds
def flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails until its attempt ``succeed_on`` (default 3; the attempt is counted in SQL), then succeeds."""
    if ctx.attempt < int(payload.get("succeed_on", 3)):
        raise RuntimeError(f"flaky: attempt {ctx.attempt} fails")
    return {"succeeded_on": ctx.attempt}


def give_up(ctx: Any, payload: dict[str, Any]) -> None:
    """Refuses for good: the task fails at once, whatever attempts it has left."""
    raise PermanentFailure(payload.get("message", "the provider refused this request"))


def come_back_later(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Asks to be retried ``after`` seconds from now on each attempt before ``succeed_on`` (default 2)."""
    if ctx.attempt < int(payload.get("succeed_on", 2)):
        raise Retry("rate limited", after=float(payload.get("after", 30)))
    return {"attempt": ctx.attempt}


@options(time_limit=1.5, retry_backoff=0.2)  # a handler's own hard time limit, in seconds
def stuck(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Never finishes in time: reports progress every 50 ms for ``for`` seconds (default 60), logging each write
    (and the pid) to ``payload["log"]`` when given, so a test sees that nothing is written after its hard limit."""
    deadline = time.monotonic() + float(payload.get("for", 60))
    while time.monotonic() < deadline:
        ctx.progress(0.5, phase=f"attempt {ctx.attempt} stuck")
        if payload.get("log"):
            _append(payload["log"], f"wrote {ctx.attempt} {os.getpid()} {time.time():.3f}")
        time.sleep(0.05)
    return {"finished": ctx.attempt}


def wind_down(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Works until told its soft time limit passed, the way a handler written for Celery is told (Celery's own
    ``SoftTimeLimitExceeded``), then cleans up: an output, then returns, or re-raises with ``reraise``.

    With ``poll``, it never catches anything: it checks ``ctx.soft_limit_reached`` between steps instead."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + float(payload.get("for", 30))
    try:
        while time.monotonic() < deadline:
            if payload.get("poll") and ctx.soft_limit_reached:
                ctx.output("log", "cleanup after polling the soft limit")
                return {"stopped": "polled"}
            time.sleep(0.02)
    except SoftTimeLimitExceeded:
        ctx.output("log", f"cleanup after the soft limit (reached: {ctx.soft_limit_reached})")
        if payload.get("reraise"):
            raise
        return {"stopped": "soft limit"}
    return {"stopped": "never"}


# A queue of this run's own (tests/conftest.py names RUN_PREFIX, which every process a test starts inherits).
SPECIAL_QUEUE = f"{os.environ.get('REDIS_KEY_PREFIX', 'crux-test')}.special"


@options(queue=SPECIAL_QUEUE, priority=7)
def on_special_queue(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Declares a queue of its own: only a worker consuming it runs it. Says which worker did."""
    return {"worker": ctx.worker_id}


def connection_marker(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """How many tasks this database connection has served (a TEMP table lives as long as the connection), and
    its PostgreSQL server process."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS crux_connection_marker (n integer)")
        cursor.execute("INSERT INTO crux_connection_marker VALUES (1)")
        cursor.execute("SELECT count(*) FROM crux_connection_marker")
        served = cursor.fetchone()[0]
        backend = None
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
    return {"tasks_on_this_connection": served, "backend": backend}


def output_then_hold(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Appends one output and writes nothing more: says so in the file ``appended`` (with its pid), then holds until
    the file ``release`` exists (30 s at most)."""
    ctx.output("log", "appended, then nothing else written")
    _append(payload["appended"], str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(payload["release"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"held": True}
