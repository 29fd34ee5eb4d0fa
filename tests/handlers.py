"""Handlers used by the tests only (registered through TASK_HANDLERS_EXTRA or settings)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tasks import services
from tasks.audit import Channel


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
    """Log each execution to a shared file; flag any earlier execution of this task still alive."""
    log = payload["log"]
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                kind, task_id, _attempt, pid = line.split()[:4]
                if kind == "start" and task_id == str(ctx.task_id) and int(pid) != os.getpid() and _alive(int(pid)):
                    _append(log, f"OVERLAP {ctx.task_id} {ctx.attempt} {os.getpid()} with {pid}")
    _append(log, f"start {ctx.task_id} {ctx.attempt} {os.getpid()}")
    time.sleep(float(payload.get("duration", 0.1)))
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
