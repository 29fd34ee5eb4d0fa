"""Readiness of the parts Crux needs: a writable database, the Redis mirror, the Celery broker and a live worker.

Readiness answers within ``HEALTH_TIMEOUT`` whatever hangs. The checks run at
once, each in a thread of a small pool, and the answer is given at the
deadline: a part that has not answered by then is reported as failing. A check
still waiting from an earlier request is not started again, so a dependency
that hangs holds one thread per part, never one per request. The worker ping
returns as soon as one worker answers.

SQLite is checked in the request's own thread: it lives in this process's files
and cannot hang past a busy timeout (the deadline), and the request's
connection sees its own transaction's lock as its own. A database server can
hang on the network, so PostgreSQL is checked in a thread on a connection of
its own, closed after each check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from celery import Celery
from django.conf import settings
from django.db import connection, transaction

from persistence import mirror
from tasks.models import Task

PARTS = ("database", "redis", "broker", "worker")
# What the web tier cannot serve without. It accepts submissions without a worker (they wait queued), without the
# broker (SQL is the outbox) and without Redis (the mirror is rebuilt from SQL): those make it degraded, not unready.
REQUIRED = ("database",)
_POOL = ThreadPoolExecutor(max_workers=3, thread_name_prefix="crux-health")
_RUNNING: dict[str, Future[dict[str, Any]]] = {}
_RUNNING_LOCK = threading.Lock()


def _write_probe() -> None:
    """A write the database must accept, that changes nothing: it takes the task table's write lock."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Task._meta.db_table} SET id = id WHERE 1 = 0")


def _database(deadline: float) -> str:
    """Open a transaction, write, roll back: a read-only, locked or unreachable database fails.

    The lock and statement timeouts are what is left of the budget once connected, so a
    locked table fails the check by the deadline, not a connection's time after it."""
    try:
        connection.ensure_connection()
        budget_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                        [f"{budget_ms}ms", f"{budget_ms}ms"],
                    )
            _write_probe()
            transaction.set_rollback(True)
    finally:
        connection.close()
    return f"{connection.vendor}: writable"


def _sqlite(deadline: float) -> str:
    """Take SQLite's write lock (``BEGIN IMMEDIATE``), waiting no longer than the deadline, and release it."""
    if connection.in_atomic_block:  # this thread's own transaction holds the lock or takes it
        _write_probe()
        return "sqlite: writable (in this thread's transaction)"
    connection.ensure_connection()
    raw = connection.connection
    (busy_ms,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute(f"PRAGMA busy_timeout = {max(int((deadline - time.monotonic()) * 1000), 1)}")
    try:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("ROLLBACK")
    finally:
        raw.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return "sqlite: writable"


def _redis(deadline: float) -> str:
    mirror.client().ping()
    return "ping answered"


def _probe_app() -> Celery:
    """A throw-away Celery app configured from settings now: control messages (published through an
    app's producer pool) and their replies then use the same broker, the one settings name."""
    probe = Celery("crux-health", set_as_current=False, amqp="crux.broker:AMQP")
    probe.config_from_object("django.conf:settings", namespace="CELERY")
    return probe


def _broker_and_worker(deadline: float, broker: Future[dict[str, Any]], worker: Future[dict[str, Any]]) -> None:
    """Connect to the broker (settling ``broker``), then ping the workers until the first answers (``worker``)."""
    probe = _probe_app()
    started = time.perf_counter()
    try:
        with probe.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0)  # one attempt: the next probe is the retry
            broker.set_result(_result(True, started, "connected"))
            started = time.perf_counter()
            timeout = max(deadline - time.monotonic(), 0.001)
            replies = probe.control.ping(timeout=timeout, connection=conn, limit=1) or []
    except Exception as exc:  # any transport error: the broker is the failing part
        if not broker.done():
            broker.set_result(_result(False, started, _describe(exc)))
            worker.set_result(_result(False, started, "not checked: the broker is unreachable"))
        else:
            worker.set_result(_result(False, started, _describe(exc)))
        return
    finally:
        probe.close()
    names = sorted(name for reply in replies for name in reply)
    if not names:
        worker.set_result(_result(False, started, f"no worker answered a ping within {timeout:.3f}s"))
        return
    answered = _result(True, started, f"{len(names)} answered")
    answered["workers"] = names
    worker.set_result(answered)


def _timed(check: Callable[[float], str], deadline: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        return _result(True, started, check(deadline))
    except Exception as exc:  # a health check reports failures, it never raises them
        return _result(False, started, _describe(exc))


def _settle(check: Callable[[float], str], deadline: float, future: Future[dict[str, Any]]) -> None:
    future.set_result(_timed(check, deadline))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _result(ok: bool, started: float, detail: str) -> dict[str, Any]:
    return {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 1), "detail": detail}


def _start(parts: tuple[str, ...], probe: Callable[..., None], deadline: float) -> None:
    """Run ``probe(deadline, *futures)`` in the pool, one future per part, unless one of these parts still waits."""
    with _RUNNING_LOCK:
        if any(part in _RUNNING and not _RUNNING[part].done() for part in parts):
            return
        futures: list[Future[dict[str, Any]]] = [Future() for _ in parts]
        _RUNNING.update(zip(parts, futures, strict=True))
    _POOL.submit(probe, deadline, *futures)


def run_checks() -> dict[str, Any]:
    """``{"status": "ok"|"degraded"|"unavailable", "failing": [...], "checks": {part: {ok, latency_ms, detail}}}`` by
    the deadline: unavailable when a REQUIRED part fails, degraded when another does."""
    started = time.perf_counter()
    deadline = time.monotonic() + settings.HEALTH_TIMEOUT
    _start(("redis",), partial(_settle, _redis), deadline)
    _start(("broker", "worker"), _broker_and_worker, deadline)
    checks: dict[str, dict[str, Any]] = {}
    if connection.vendor == "sqlite":
        checks["database"] = _timed(_sqlite, deadline)
    else:
        _start(("database",), partial(_settle, _database), deadline)
    with _RUNNING_LOCK:
        pending = {part: _RUNNING[part] for part in PARTS if part not in checks}
    wait(pending.values(), timeout=max(deadline - time.monotonic(), 0))
    for part, future in pending.items():
        if future.done():
            checks[part] = future.result()
            continue
        detail = f"no answer within {settings.HEALTH_TIMEOUT}s"
        if part == "worker":
            broker = pending["broker"]
            connected = broker.done() and broker.result()["ok"]
            detail = "no worker answered a ping" if connected else "not checked: the broker did not answer"
            detail += f" within {settings.HEALTH_TIMEOUT}s"
        checks[part] = _result(False, started, detail)
    checks = {part: checks[part] for part in PARTS}
    failing = [part for part, result in checks.items() if not result["ok"]]
    status = "unavailable" if set(REQUIRED) & set(failing) else "degraded" if failing else "ok"
    return {"status": status, "failing": failing, "checks": checks}
