"""Consistent online backups and their restore.

SQLite: the online backup API copies a consistent snapshot while the system
runs. Any engine: a portable JSON-lines export of every Crux table (users,
tokens, tasks with history, outputs and metrics, retention, Celery results),
exact to the microsecond so the history chains still verify after a restore.
Backups rotate after ``BACKUP_RETENTION_DAYS``, never the newest one that passed its restore drill
(``persistence.drills``). Each backup is followed by a signed audit checkpoint (``tasks.checkpoints``) naming
it, so what it holds stays provable. Beside each backup: ``.sha256`` (its checksum) and ``.manifest.json``
(the rows of each table at backup time, which a drill compares with what it restores). When the storage alias
``backups_copy`` is configured, the three are also copied there and each copy is read back and compared; a
restore whose file is missing or corrupt here reads the copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core import serializers
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.core.management.color import no_style
from django.db import connection, transaction
from django.utils import timezone

from persistence.models import BackupDrill
from tasks import services
from tasks.checkpoints import write_checkpoint
from tasks.exceptions import InvalidTaskData
from tasks.models import HistoryPurgeGrant, SchedulerLease, Task
from tasks.records import checksum, encode, serialize_queryset

FORMAT = "crux-backup/1"
# django_celery_beat: the timings and beat entries of the periodic schedules (tasks.TaskSchedule) refer to.
BACKUP_APPS = ("auth", "authtoken", "tasks", "retention", "django_celery_results", "django_celery_beat")
NATURAL_KEY_MODELS = ("auth.group", "auth.user")
SUFFIXES = (".sqlite3", ".jsonl.gz")
SIDECARS = (".sha256", ".manifest.json")
COPY_STORAGE = "backups_copy"

logger = logging.getLogger(__name__)


class BackupError(Exception):
    """A backup could not be made or restored; the message says why."""


@dataclass
class BackupResult:
    path: Path
    checksum: str
    rows: int
    rotated: list[Path]
    checkpoint: Path
    copied: bool
    copy_problem: str = ""


def backup_dir() -> Path:
    return Path(settings.BACKUP_DIR)


def _target(extension: str) -> Path:
    directory = backup_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"crux-backup-{timezone.now():%Y%m%dT%H%M%S%f}.{extension}"


def backups() -> list[Path]:
    """The backup files in BACKUP_DIR, oldest first (their names hold their creation time)."""
    return sorted(p for p in backup_dir().glob("crux-backup-*") if p.name.endswith(SUFFIXES))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _models() -> list:
    """Every model worth backing up, parents first. Permissions are left out: ``migrate`` recreates
    them (with new ids), and users and groups name theirs by natural key. So is the scheduler lease: a beat's.
    Proxy models (``TokenProxy``, ``CeleryResult``) are left out: their rows are their concrete model's, written
    once under its name."""
    app_list = [(apps.get_app_config(label), None) for label in BACKUP_APPS]
    skip = {HistoryPurgeGrant, Permission, SchedulerLease}
    models = serializers.sort_dependencies(app_list, allow_cycles=True)
    return [m for m in models if m not in skip and not m._meta.proxy]


def backup(fmt: str | None = None) -> BackupResult:
    """Write a backup (``sqlite`` online copy or portable ``json``) with its checksum and row counts, copy it to the
    second location (if configured), and rotate old ones. A copy that fails is logged at ERROR and reported in
    ``copy_problem``: the backup itself is written and kept."""
    fmt = fmt or ("sqlite" if connection.vendor == "sqlite" else "json")
    if fmt == "sqlite":
        if connection.vendor != "sqlite":
            raise BackupError("the sqlite format needs the SQLite engine; use --format json")
        if connection.in_atomic_block:
            raise BackupError("a consistent online backup cannot run inside a transaction")
        path = _target("sqlite3")
        connection.ensure_connection()
        counts = sqlite_copy(connection.connection, path)
        rows = counts[Task._meta.db_table]
    elif fmt == "json":
        path = _target("jsonl.gz")
        counts = {}
        with transaction.atomic(), gzip.open(path, "wt", encoding="utf-8") as out:
            _snapshot_isolation()
            out.write(encode({"format": FORMAT, "created_at": timezone.now(), "vendor": connection.vendor}) + "\n")
            for model in _models():
                natural = model._meta.label_lower in NATURAL_KEY_MODELS
                written = 0
                for row in serialize_queryset(model._base_manager.all(), natural=natural):
                    out.write(encode(row) + "\n")
                    written += 1
                counts[model._meta.db_table] = written
        rows = sum(counts.values())
    else:
        raise BackupError(f"unknown backup format {fmt!r}: use sqlite or json")
    digest = seal(path, fmt, counts)
    checkpoint = write_checkpoint(backup=path)
    copied, copy_problem = copy_or_report(path, "backup")
    return BackupResult(
        path=path,
        checksum=digest,
        rows=rows,
        rotated=rotate(),
        checkpoint=checkpoint.path,
        copied=copied,
        copy_problem=copy_problem,
    )


def sqlite_copy(source: sqlite3.Connection, path: Path) -> dict[str, int]:
    """Copy the SQLite database ``source`` into a new file at ``path`` with the online backup API, in one step: one
    read transaction, so the copy is one consistent snapshot and, in WAL mode, writers go on committing meanwhile.
    The copy is a standalone file (rollback journal, not WAL). Returns the rows of each backed-up table in it."""
    target = sqlite3.connect(path)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        return {table: target.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in _tables()}
    finally:
        target.close()


def seal(path: Path, fmt: str, counts: dict[str, int]) -> str:
    """Sync a written backup to disk and write its sidecars (checksum, manifest of row counts); its checksum."""
    _fsync(path)
    _fsync(path.parent)
    digest = checksum(path)
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    manifest = {"file": path.name, "checksum": digest, "created_at": timezone.now(), "format": fmt, "counts": counts}
    Path(f"{path}.manifest.json").write_text(encode(manifest) + "\n")
    return digest


def _tables() -> list[str]:
    return [model._meta.db_table for model in _models()]


def row_counts() -> dict[str, int]:
    """The rows of each backed-up table in this database (a drill compares them with the backup's manifest)."""
    return {model._meta.db_table: model._base_manager.count() for model in _models()}


def _snapshot_isolation() -> None:
    """On PostgreSQL, read every table from one snapshot (REPEATABLE READ): under the default READ COMMITTED each
    query sees what committed before it, so a task could be read before a transition and its history after."""
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:  # the transaction's first statement
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")


def manifest(path: Path) -> dict | None:
    """What was recorded beside ``path`` at backup time (checksum, rows per table), or None for older backups."""
    sidecar = Path(f"{path}.manifest.json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else None


def copy_storage() -> Storage | None:
    """The second location (the ``backups_copy`` storage alias), or None where none is configured."""
    return storages[COPY_STORAGE] if COPY_STORAGE in settings.STORAGES else None


def _storage_checksum(storage: Storage, name: str) -> str:
    with storage.open(name, "rb") as stored:
        return "sha256:" + hashlib.file_digest(stored, "sha256").hexdigest()


def copy_or_report(path: Path, kind: str) -> tuple[bool, str]:
    """``copy_out``, its failure logged at ERROR and returned as the problem: the file itself is written and kept.
    (copied, problem)."""
    try:
        return copy_out(path), ""
    except (BackupError, OSError) as exc:
        problem = f"not copied to the second location: {exc}"
        logger.error("%s %s %s", kind, path.name, problem)
        return False, problem


def copy_out(path: Path) -> bool:
    """Copy a backup and its sidecars to the second location, each read back and compared with the original;
    False when no second location is configured. Raises BackupError when a copy does not match."""
    storage = copy_storage()
    if storage is None:
        return False
    for source in (path, *(Path(f"{path}{suffix}") for suffix in SIDECARS)):
        if not source.exists():
            continue
        if storage.exists(source.name):
            storage.delete(source.name)
        with open(source, "rb") as original:
            stored = storage.save(source.name, File(original, name=source.name))
        if _storage_checksum(storage, stored) != checksum(source):
            storage.delete(stored)
            raise BackupError(f"the copy of {source.name} in the second location does not match its checksum")
    return True


def _fetch_copy(path: Path) -> bool:
    """Bring ``path`` and its sidecars back from the second location (a corrupt file here is kept aside as
    ``.corrupt``); False if the second location does not hold it."""
    storage = copy_storage()
    if storage is None or not storage.exists(path.name):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(path.with_name(path.name + ".corrupt"))
    for name in (path.name, *(path.name + suffix for suffix in SIDECARS)):
        if not storage.exists(name):
            continue
        partial = path.with_name(name + ".part")
        with storage.open(name, "rb") as stored, open(partial, "wb") as local:
            for block in iter(lambda: stored.read(1 << 20), b""):
                local.write(block)
        partial.replace(path.with_name(name))
    logger.warning("backup %s restored from the second location", path.name)
    return True


def rotate(now: datetime | None = None) -> list[Path]:
    """Delete backups older than BACKUP_RETENTION_DAYS (and their copies), never the newest good one."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BACKUP_RETENTION_DAYS)
    found = backups()
    keep = newest_good(found)
    removed = []
    for path in found:
        if path != keep and datetime.fromtimestamp(path.stat().st_mtime, tz=cutoff.tzinfo) < cutoff:
            remove(path)
            removed.append(path)
    return removed


def remove(path: Path) -> None:
    """Delete a backup with its sidecars, here and in the second location."""
    storage = copy_storage()
    for name in (path.name, *(path.name + suffix for suffix in SIDECARS)):
        path.with_name(name).unlink(missing_ok=True)
        if storage is not None and storage.exists(name):
            storage.delete(name)


def newest_good(found: list[Path]) -> Path | None:
    """The backup rotation always keeps: the newest whose last drill passed; else (none passed yet) the newest not
    known to fail its drill; else the newest (the last backup is never deleted, even a failed one)."""
    last_drill: dict[str, bool] = {}
    drills = BackupDrill.objects.filter(backup_name__in=[p.name for p in found]).order_by("started_at", "pk")
    for name, ok in drills.values_list("backup_name", "ok"):
        last_drill[name] = ok
    passed = [p for p in found if last_drill.get(p.name) is True]
    untested = [p for p in found if p.name not in last_drill]
    for candidates in (passed, untested, found):
        if candidates:
            return candidates[-1]
    return None


def last_backup() -> datetime | None:
    found = backups()
    if not found:
        return None
    return datetime.fromtimestamp(max(p.stat().st_mtime for p in found), tz=timezone.get_current_timezone())


def verify(path: Path) -> None:
    sidecar = Path(f"{path}.sha256")
    if sidecar.exists():
        expected = sidecar.read_text().split()[0]
        if checksum(path) != expected:
            raise BackupError(f"backup {path} is corrupt: its checksum does not match {sidecar.name}")


def locate(path: Path) -> Path:
    """``path``, checked against its checksum; if it is missing or corrupt, its copy from the second location."""
    try:
        if not path.exists():
            raise BackupError(f"no backup at {path}")
        verify(path)
    except BackupError:
        if not _fetch_copy(path):
            raise
        verify(path)
    return path


def load_backup(path: Path, *, from_copy: bool = True) -> int:
    """Restore a backup into this database, which must hold no tasks and no users yet; a backup missing or corrupt
    here is read from the second location unless ``from_copy`` is False (a drill tests the file it names)."""
    if from_copy:
        locate(path)
    elif not path.exists():
        raise BackupError(f"no backup at {path}")
    else:
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
            try:
                restored = services.load_rows(lines)
            except (
                serializers.base.DeserializationError,
                ValidationError,
                InvalidTaskData,
                ValueError,
                LookupError,
            ) as exc:
                raise BackupError(
                    f"{path.name} holds a row this database cannot take, nothing restored: {exc}"
                ) from exc
            reset = connection.ops.sequence_reset_sql(no_style(), _models())
            if reset:
                with connection.cursor() as cursor:
                    for statement in reset:
                        cursor.execute(statement)
    _analyze_restored()
    return restored


def _analyze_restored() -> None:
    """On PostgreSQL, gather the statistics of the tables just loaded: the planner knows nothing of fresh tables
    until autovacuum analyses them (late, or never where it is off). ``verify_audit`` of 100,000 restored tasks
    took 108 s without them, 65 s with them (and ANALYZE 5 s)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(connection.ops.quote_name(table) for table in _tables())}")
