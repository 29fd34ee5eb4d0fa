"""Health of the parts Crux needs: the database, the Redis mirror, the Celery broker and a live worker.

Each check is short and bounded by a timeout, and reports ``ok`` with its
latency or the error that failed it. The HTTP view answers 503 naming the
failing parts, so a load balancer or an operator sees what is degraded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from django.conf import settings
from django.db import connection

from persistence import mirror


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _redis() -> str:
    mirror.client().ping()
    return "ping answered"


def _probe_app() -> Celery:
    """A throw-away Celery app configured from settings now: control messages (published through an
    app's producer pool) and their replies then use the same broker, the one settings name."""
    probe = Celery("crux-health", set_as_current=False)
    probe.config_from_object("django.conf:settings", namespace="CELERY")
    return probe


def _broker_and_workers() -> tuple[dict[str, Any], dict[str, Any]]:
    """Connect to the broker, then ask every worker to answer a ping."""
    probe = _probe_app()
    started = time.perf_counter()
    try:
        with probe.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
            broker = _result(True, started, "connected")
            started = time.perf_counter()
            replies = probe.control.ping(timeout=settings.HEALTH_WORKER_TIMEOUT, connection=conn) or []
    except Exception as exc:  # any transport error: the broker is the failing part
        broker = _result(False, started, _describe(exc))
        return broker, _result(False, started, "not checked: the broker is unreachable")
    finally:
        probe.close()
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return broker, _result(False, started, f"no worker answered a ping within {settings.HEALTH_WORKER_TIMEOUT}s")
    worker = _result(True, started, f"{len(names)} answered")
    worker["workers"] = names
    return broker, worker


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _result(ok: bool, started: float, detail: str) -> dict[str, Any]:
    return {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 1), "detail": detail}


def _timed(check: Callable[[], str]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        return _result(True, started, check())
    except Exception as exc:  # a health check reports failures, it never raises them
        return _result(False, started, _describe(exc))


def run_checks() -> dict[str, Any]:
    """``{"status": "ok"|"degraded", "failing": [...], "checks": {part: {ok, latency_ms, detail}}}``."""
    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    checks["broker"], checks["worker"] = _broker_and_workers()
    failing = [name for name, result in checks.items() if not result["ok"]]
    return {"status": "degraded" if failing else "ok", "failing": failing, "checks": checks}
