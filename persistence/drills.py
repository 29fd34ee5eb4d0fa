"""Restore drills: a backup is proven by restoring it, not hoped for.

A drill restores a backup into a scratch database (SQLite: a file in a temporary directory; PostgreSQL: a database
``<name>_drill_<pid>`` created and dropped around it), runs the audit verification there and compares the rows of
each table with those recorded beside the backup when it was made (``.manifest.json``). It is recorded in SQL
(``BackupDrill``), and a failure raises an alert: an ERROR log and ``drill_alert``, which the project connects to the
deletion breaker's webhook.

The restore and the verification run in a child process (``drill_backup --in-scratch``) whose DATABASE_URL names the
scratch database: the restore code and ``verify_audit_chains`` work on the default connection, unchanged, and the
live database is never the one written. The child has no Redis (a scratch restore must not write the live mirror,
and the mirror witnesses the live tasks, not the backup's) and verifies without a checkpoint (the newest one may be
newer than the backup, and name tasks it does not hold: the row counts recorded in the same snapshot stand for it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models.signals import post_save
from django.dispatch import Signal
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from persistence.backup import BackupError, backup_dir, backups, load_backup, manifest, row_counts, verify
from persistence.models import BackupDrill, DrillTrigger
from tasks.models import Task
from tasks.records import checksum
from tasks.selectors import verify_audit_chains

logger = logging.getLogger(__name__)

# Sent with ``message`` when a drill fails or none passed within BACKUP_DRILL_MAX_AGE_SECONDS.
drill_alert = Signal()

CHILD_TIMEOUT_SECONDS = 3600
# The child's Redis: none (a socket path that cannot exist), so nothing it does reaches the live mirror.
NO_REDIS = "unix:///nonexistent/crux-drill-has-no-redis.sock"
MAX_PROBLEMS = 50


class DrillError(Exception):
    """The drill could not run (no backup, no scratch database, the child died); the message says why."""


def run_drill(path: Path | None = None, *, trigger: str = DrillTrigger.COMMAND, actor: str = "") -> BackupDrill:
    """Drill ``path`` (default: the newest backup), record the drill and alert if it failed."""
    if path is None:
        found = backups()
        if not found:
            raise DrillError(f"no backup in {backup_dir()} to drill")
        path = found[-1]
    started, clock = timezone.now(), time.perf_counter()
    problems: list[str] = []
    counts: dict[str, dict[str, int | None]] = {}
    digest = ""
    try:
        if not path.exists():
            raise BackupError(f"no backup at {path}")
        digest = checksum(path)
        verify(path)
        report = _restore_in_scratch(path)
        problems.extend(report["problems"])
        recorded = (manifest(path) or {}).get("counts")
        if recorded is None:
            problems.append("no row counts were recorded beside this backup: nothing to compare with")
        else:
            counts = {
                table: {"recorded": n, "restored": report["counts"].get(table)} for table, n in sorted(recorded.items())
            }
            problems.extend(
                f"table {table}: {c['recorded']} rows at backup time, {c['restored']} restored"
                for table, c in counts.items()
                if c["recorded"] != c["restored"]
            )
    except (BackupError, DrillError, OSError, ValueError) as exc:
        problems.append(str(exc))
    drill = BackupDrill.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        duration_seconds=round(time.perf_counter() - clock, 3),
        backup_name=path.name,
        checksum=digest,
        ok=not problems,
        trigger=trigger,
        actor=actor,
        problems=problems[:MAX_PROBLEMS],
        counts=counts,
    )
    if drill.ok:
        logger.info("backup drill of %s passed in %.1fs", path.name, drill.duration_seconds)
    else:
        alert(f"the restore drill of backup {path.name} FAILED: {'; '.join(problems[:3])}")
    return drill


def alert(message: str) -> None:
    logger.error("BACKUP DRILL: %s", message)
    drill_alert.send(sender=BackupDrill, message=f"backup drill: {message}")


def check_drills(now: datetime | None = None) -> str | None:
    """Alert when no drill passed within BACKUP_DRILL_MAX_AGE_SECONDS (counted from the first backup or drill, so a
    new installation has the window to make its first); returns the alert, or None."""
    now = now or timezone.now()
    window = timedelta(seconds=settings.BACKUP_DRILL_MAX_AGE_SECONDS)
    success = last_success()
    if success is not None:
        since = success.finished_at
    else:
        first_drill = BackupDrill.objects.order_by("started_at").values_list("started_at", flat=True).first()
        found = backups()
        first_backup = datetime.fromtimestamp(found[0].stat().st_mtime, tz=now.tzinfo) if found else None
        known = [moment for moment in (first_drill, first_backup) if moment is not None]
        if not known:
            return None
        since = min(known)
    if now - since <= window:
        return None
    message = (
        f"no restore drill has passed since {since:%Y-%m-%d %H:%M:%S}Z "
        f"(BACKUP_DRILL_MAX_AGE_SECONDS = {settings.BACKUP_DRILL_MAX_AGE_SECONDS:.0f})"
    )
    alert(message)
    return message


def last_drill() -> BackupDrill | None:
    return BackupDrill.objects.order_by("-started_at", "-pk").first()


def last_success() -> BackupDrill | None:
    return BackupDrill.objects.filter(ok=True).order_by("-started_at", "-pk").first()


def summary(drill: BackupDrill | None) -> dict[str, Any] | None:
    """A drill as the stats API and the dashboard show it."""
    if drill is None:
        return None
    return {
        "started_at": drill.started_at,
        "finished_at": drill.finished_at,
        "duration_seconds": drill.duration_seconds,
        "backup": drill.backup_name,
        "checksum": drill.checksum,
        "ok": drill.ok,
        "trigger": drill.trigger,
        "problems": drill.problems,
    }


def _restore_in_scratch(path: Path) -> dict[str, Any]:
    """Restore and verify ``path`` in a child process on a scratch database; its report (counts, problems)."""
    with scratch_database() as url:
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": NO_REDIS, "CELERY_BROKER_URL": NO_REDIS}
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "drill_backup", "--in-scratch", str(path)]
        try:
            child = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DrillError(f"the scratch restore did not finish within {CHILD_TIMEOUT_SECONDS}s") from exc
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise DrillError(f"the scratch restore failed (exit status {child.returncode}): {tail}")
    return json.loads(lines[-1])


@contextmanager
def scratch_database() -> Iterator[str]:
    """A DATABASE_URL naming an empty scratch database of the live engine, removed afterwards."""
    if connection.vendor == "sqlite":
        with tempfile.TemporaryDirectory(prefix="crux-drill-") as directory:
            yield f"sqlite:///{directory}/drill.sqlite3"
        return
    if connection.vendor != "postgresql":
        raise DrillError(f"no scratch database for the {connection.vendor} engine")
    name = f"{connection.settings_dict['NAME'][:40]}_drill_{os.getpid()}"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {quoted}")
    try:
        yield urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def restore_and_verify(path: Path) -> dict[str, Any]:
    """In the child, on the scratch database: migrate, restore ``path``, count each table, verify the audit trail."""
    post_save.disconnect(sender=Task, dispatch_uid="persistence.mirror.refresh")
    call_command("migrate", verbosity=0, interactive=False)
    restored = load_backup(path, from_copy=False)
    counts = row_counts()
    problems = [str(problem) for problem in verify_audit_chains(checkpoint=(None, []))]
    return {"restored": restored, "counts": counts, "problems": problems[:MAX_PROBLEMS]}


class DrillCollector(Collector):
    """The last drill's result and the time of the last that passed, read from SQL when scraped."""

    def describe(self) -> Iterator[Any]:
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        last_ok, success_at = self._families()
        drill, success = last_drill(), last_success()
        if drill is not None:
            last_ok.add_metric([], 1 if drill.ok else 0)
        if success is not None:
            success_at.add_metric([], success.finished_at.timestamp())
        yield from (last_ok, success_at)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("crux_backup_drill_last_ok", "1 if the last backup restore drill passed, 0 if it failed"),
            GaugeMetricFamily(
                "crux_backup_drill_last_success_timestamp_seconds", "When the last passing backup restore drill ended"
            ),
        )
