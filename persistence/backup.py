"""Consistent online backups and their restore.

SQLite: the online backup API copies a consistent snapshot while the system
runs. Any engine: a portable JSON-lines export of every Crux table (users,
tokens, tasks with history, outputs and metrics, retention, Celery results),
exact to the microsecond so the history chains still verify after a restore.
Backups rotate after ``BACKUP_RETENTION_DAYS``. Each backup is followed by a signed
audit checkpoint (``tasks.checkpoints``) naming it, so what it holds stays provable.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core import serializers
from django.core.management.color import no_style
from django.db import connection, transaction
from django.utils import timezone

from tasks import services
from tasks.checkpoints import write_checkpoint
from tasks.models import HistoryPurgeGrant, SchedulerLease, Task
from tasks.records import checksum, encode, serialize_queryset

FORMAT = "crux-backup/1"
# django_celery_beat: the timings and beat entries of the periodic schedules (tasks.TaskSchedule) refer to.
BACKUP_APPS = ("auth", "authtoken", "tasks", "retention", "django_celery_results", "django_celery_beat")
NATURAL_KEY_MODELS = ("auth.group", "auth.user")


class BackupError(Exception):
    """A backup could not be made or restored; the message says why."""


@dataclass
class BackupResult:
    path: Path
    checksum: str
    rows: int
    rotated: list[Path]
    checkpoint: Path


def backup_dir() -> Path:
    return Path(settings.BACKUP_DIR)


def _target(extension: str) -> Path:
    directory = backup_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"crux-backup-{timezone.now():%Y%m%dT%H%M%S%f}.{extension}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _models() -> list:
    """Every model worth backing up, parents first. Permissions are left out: ``migrate`` recreates
    them (with new ids), and users and groups name theirs by natural key. So is the scheduler lease: a beat's."""
    app_list = [(apps.get_app_config(label), None) for label in BACKUP_APPS]
    skip = {HistoryPurgeGrant, Permission, SchedulerLease}
    return [m for m in serializers.sort_dependencies(app_list, allow_cycles=True) if m not in skip]


def backup(fmt: str | None = None) -> BackupResult:
    """Write a backup (``sqlite`` online copy or portable ``json``) and rotate old ones."""
    fmt = fmt or ("sqlite" if connection.vendor == "sqlite" else "json")
    if fmt == "sqlite":
        if connection.vendor != "sqlite":
            raise BackupError("the sqlite format needs the SQLite engine; use --format json")
        if connection.in_atomic_block:
            raise BackupError("a consistent online backup cannot run inside a transaction")
        path = _target("sqlite3")
        connection.ensure_connection()
        target = sqlite3.connect(path)
        try:
            connection.connection.backup(target)
        finally:
            target.close()
        rows = Task.objects.count()
    elif fmt == "json":
        path = _target("jsonl.gz")
        rows = 0
        with transaction.atomic(), gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(encode({"format": FORMAT, "created_at": timezone.now(), "vendor": connection.vendor}) + "\n")
            for model in _models():
                natural = model._meta.label_lower in NATURAL_KEY_MODELS
                for row in serialize_queryset(model._base_manager.all(), natural=natural):
                    out.write(encode(row) + "\n")
                    rows += 1
    else:
        raise BackupError(f"unknown backup format {fmt!r}: use sqlite or json")
    _fsync(path)
    _fsync(path.parent)
    digest = checksum(path)
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    checkpoint = write_checkpoint(backup=path)
    return BackupResult(path=path, checksum=digest, rows=rows, rotated=rotate(), checkpoint=checkpoint.path)


def rotate(now: datetime | None = None) -> list[Path]:
    """Delete backups older than BACKUP_RETENTION_DAYS (never the newest one)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BACKUP_RETENTION_DAYS)
    found = sorted(p for p in backup_dir().glob("crux-backup-*") if not p.name.endswith(".sha256"))
    removed = []
    for path in found[:-1]:
        if datetime.fromtimestamp(path.stat().st_mtime, tz=cutoff.tzinfo) < cutoff:
            path.unlink()
            Path(f"{path}.sha256").unlink(missing_ok=True)
            removed.append(path)
    return removed


def last_backup() -> datetime | None:
    found = [p for p in backup_dir().glob("crux-backup-*") if not p.name.endswith(".sha256")]
    if not found:
        return None
    return datetime.fromtimestamp(max(p.stat().st_mtime for p in found), tz=timezone.get_current_timezone())


def verify(path: Path) -> None:
    sidecar = Path(f"{path}.sha256")
    if sidecar.exists():
        expected = sidecar.read_text().split()[0]
        if checksum(path) != expected:
            raise BackupError(f"backup {path} is corrupt: its checksum does not match {sidecar.name}")


def load_backup(path: Path) -> int:
    """Restore a backup into this database, which must hold no tasks and no users yet."""
    if not path.exists():
        raise BackupError(f"no backup at {path}")
    verify(path)
    if path.name.endswith(".sqlite3"):
        return _restore_sqlite(path)
    if path.name.endswith(".jsonl.gz"):
        return _restore_json(path)
    raise BackupError(f"{path.name} is not a Crux backup (.sqlite3 or .jsonl.gz)")


def _refuse_non_empty() -> None:
    from django.contrib.auth import get_user_model

    if Task.objects.exists() or get_user_model().objects.exists():
        raise BackupError("this database already holds tasks or users; restore into a fresh, migrated database")


def _restore_sqlite(path: Path) -> int:
    if connection.vendor != "sqlite":
        raise BackupError("a .sqlite3 backup restores onto the SQLite engine only; use a .jsonl.gz backup")
    _refuse_non_empty()
    connection.ensure_connection()
    source = sqlite3.connect(path)
    try:
        source.backup(connection.connection)
    finally:
        source.close()
    return Task.objects.count()


def _restore_json(path: Path) -> int:
    _refuse_non_empty()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = json.loads(next(lines))
        if header.get("format") != FORMAT:
            raise BackupError(f"{path.name} is not a Crux backup")
        with transaction.atomic():
            restored = services.load_rows(json.loads(line) for line in lines)
            reset = connection.ops.sequence_reset_sql(no_style(), _models())
            if reset:
                with connection.cursor() as cursor:
                    for statement in reset:
                        cursor.execute(statement)
    return restored
