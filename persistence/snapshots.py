"""SQLite snapshots: a recovery point minutes old between the daily backups.

Every ``SQLITE_SNAPSHOT_SECONDS`` (300 by default; 0 disables them) a housekeeping job (``crux.sqlite_snapshot``)
copies the database with SQLite's online backup API into ``BACKUP_DIR/snapshots/``. The copy is made in one step on
a connection of its own: one read transaction, so it is one consistent snapshot, and in WAL mode a reader never
blocks a writer, so tasks go on committing while it runs (their commits land in the WAL, after the snapshot). Each
snapshot has the sidecars of a backup (``.sha256``, ``.manifest.json``), is copied to the second location when one is
configured, and restores with ``restore FILE`` like a ``.sqlite3`` backup. The newest ``SQLITE_SNAPSHOT_KEEP`` are
kept. A failure of the disk loses at most what committed since the last snapshot: the recovery point is the interval
(plus the time one snapshot takes). PostgreSQL has WAL archiving instead (README, "Point-in-time recovery").
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from persistence.backup import BackupError, backup_dir, copy_or_report, remove, seal, sqlite_copy

PREFIX = "crux-snapshot-"


@dataclass
class SnapshotResult:
    path: Path
    checksum: str
    seconds: float
    rotated: list[Path]
    copied: bool
    copy_problem: str = ""


def snapshot_dir() -> Path:
    return backup_dir() / "snapshots"


def snapshots() -> list[Path]:
    """The snapshot files, oldest first (their names hold their creation time)."""
    return sorted(snapshot_dir().glob(f"{PREFIX}*.sqlite3"))


def enabled() -> bool:
    """Snapshots are taken on the SQLite engine only, unless SQLITE_SNAPSHOT_SECONDS is 0."""
    return connection.vendor == "sqlite" and settings.SQLITE_SNAPSHOT_SECONDS > 0


def take_snapshot() -> SnapshotResult:
    """Snapshot the SQLite database into ``snapshot_dir()`` with its sidecars, copy it to the second location (a
    failed copy is logged at ERROR and reported, the snapshot is kept) and keep the newest SQLITE_SNAPSHOT_KEEP."""
    if connection.vendor != "sqlite":
        raise BackupError("snapshots copy a SQLite database; PostgreSQL recovers to a point in time from its WAL")
    directory = snapshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{PREFIX}{timezone.now():%Y%m%dT%H%M%S%f}.sqlite3"
    started = time.perf_counter()
    source = sqlite3.connect(
        connection.settings_dict["NAME"], timeout=connection.settings_dict["OPTIONS"].get("timeout", 5)
    )
    try:
        counts = sqlite_copy(source, path)
    finally:
        source.close()
    seconds = time.perf_counter() - started
    digest = seal(path, "sqlite", counts)
    copied, copy_problem = copy_or_report(path, "snapshot")
    return SnapshotResult(
        path=path,
        checksum=digest,
        seconds=seconds,
        rotated=rotate_snapshots(),
        copied=copied,
        copy_problem=copy_problem,
    )


def rotate_snapshots() -> list[Path]:
    """Delete all but the newest SQLITE_SNAPSHOT_KEEP snapshots, with their sidecars and copies; those deleted."""
    removed = snapshots()[: -max(1, settings.SQLITE_SNAPSHOT_KEEP)]
    for path in removed:
        remove(path)
    return removed
