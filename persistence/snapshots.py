"""SQLite snapshots: a recovery point minutes old between the daily backups.

Every ``SQLITE_SNAPSHOT_SECONDS`` (300 by default; 0 disables them) a housekeeping job (``crux.sqlite_snapshot``)
copies the database with SQLite's online backup API into ``BACKUP_DIR/snapshots/``. The copy is made in one step on
a connection of its own: one read transaction, so it is one consistent snapshot, and in WAL mode a reader never
blocks a writer, so tasks go on committing while it runs (their commits land in the WAL, after the snapshot). Each
snapshot has the sidecars of a backup (``.sha256``, ``.manifest.json``), is copied to the second location when one is
configured, and restores with ``restore FILE`` like a ``.sqlite3`` backup. The newest ``SQLITE_SNAPSHOT_KEEP`` are
kept. A failure of the disk loses at most what committed since the moment the last finished snapshot copied.

That recovery point is the interval, not the interval plus a snapshot's own time: the job runs every
``SQLITE_SNAPSHOT_TICK_SECONDS`` (a tenth of the interval, at most 10 s) and starts a snapshot once the newest one's
moment is an interval old less the time the newest took (copy, fsync, checksum) and less one tick, so the next one
is finished by the time an interval has passed since the moment of the one before. PostgreSQL has WAL archiving
instead (README, "Point-in-time recovery").
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from persistence.backup import BackupError, backup_dir, copy_or_report, remove, seal, sqlite_copy

PREFIX = "crux-snapshot-"
NAME_TIME = "%Y%m%dT%H%M%S%f"


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


def moment(path: Path) -> datetime:
    """When the snapshot at ``path`` began copying (its name says; the copy's read transaction starts just after)."""
    return datetime.strptime(path.stem.removeprefix(PREFIX), NAME_TIME).replace(tzinfo=UTC)


def duration(path: Path) -> timedelta:
    """How long the snapshot at ``path`` took to be whole on disk: from its moment to its manifest, written once the
    copy is synced and checksummed (while one is being written, the time so far)."""
    manifest = Path(f"{path}.manifest.json")
    finished = (manifest if manifest.exists() else path).stat().st_mtime
    return max(timedelta(0), datetime.fromtimestamp(finished, tz=UTC) - moment(path))


def snapshot_due(now: datetime | None = None) -> bool:
    """Whether a snapshot must start now for the recovery point to stay within SQLITE_SNAPSHOT_SECONDS: once the
    newest one's moment is an interval old, less the time it took and one tick of the job (a snapshot still being
    written is the newest, so none starts beside it)."""
    found = snapshots()
    if not found:
        return True
    newest = found[-1]
    lead = duration(newest) + timedelta(seconds=settings.SQLITE_SNAPSHOT_TICK_SECONDS)
    return (now or timezone.now()) >= moment(newest) + timedelta(seconds=settings.SQLITE_SNAPSHOT_SECONDS) - lead


def take_snapshot() -> SnapshotResult:
    """Snapshot the SQLite database into ``snapshot_dir()`` with its sidecars, copy it to the second location (a
    failed copy is logged at ERROR and reported, the snapshot is kept) and keep the newest SQLITE_SNAPSHOT_KEEP."""
    if connection.vendor != "sqlite":
        raise BackupError("snapshots copy a SQLite database; PostgreSQL recovers to a point in time from its WAL")
    directory = snapshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{PREFIX}{timezone.now().strftime(NAME_TIME)}.sqlite3"
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
