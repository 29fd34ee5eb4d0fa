"""SQLite snapshots: taken while tasks are being written (which never wait for them), consistent, rotated, copied to
the second location, restored with `restore FILE`."""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from crux.celery import route_task
from persistence.backup import BackupError
from persistence.drills import run_drill
from persistence.models import BackupDrill, DrillTrigger
from persistence.snapshots import (
    NAME_TIME,
    PREFIX,
    duration,
    moment,
    snapshot_dir,
    snapshot_due,
    snapshots,
    take_snapshot,
)
from persistence.tasks import daily_backup, sqlite_snapshot
from tasks import services
from tasks.audit import Channel
from tasks.selectors import verify_audit_chains
from tests.persistence.test_backup import drop_everything
from tests.persistence.test_drills import copies, run, seed  # noqa: F401  (copies: a fixture)

ON_SQLITE = django_settings.DATABASES["default"]["ENGINE"] == "crux.db"
sqlite_only = pytest.mark.skipif(
    not ON_SQLITE,
    reason="snapshots copy a SQLite database; PostgreSQL's recovery point comes from WAL archiving "
    "(tests/persistence/test_point_in_time.py)",
)
FILLER_MB = 48


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    return settings.BACKUP_DIR


@pytest.fixture
def filler():
    """Megabytes of rows in a table of the test's own, so that a snapshot takes long enough to write during it."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE snapshot_filler (b BLOB)")
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "INSERT INTO snapshot_filler SELECT randomblob(1048576) FROM n",
            [FILLER_MB],
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE snapshot_filler")


class Writer(threading.Thread):
    """Creates tasks and queues them, one commit after another, timing each, until stopped."""

    def __init__(self, user):
        super().__init__(daemon=True)
        self.user, self.stop, self.commits, self.error = user, threading.Event(), [], None

    def run(self):
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                task = services.create_task(owner=self.user, actor=self.user, channel=Channel.API, title="written")
                self.commits.append((started, time.perf_counter()))
                started = time.perf_counter()
                services.transition(task.pk, "queued", actor="system:test", channel=Channel.SYSTEM, reason="go")
                self.commits.append((started, time.perf_counter()))
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()


@sqlite_only
def test_a_snapshot_taken_while_tasks_are_written_never_blocks_them_and_is_consistent(live_db, user, filler):
    seed(user)
    writer = Writer(user)
    writer.start()
    while len(writer.commits) < 4:  # the writer is going
        time.sleep(0.01)
    began = time.perf_counter()
    result = take_snapshot()
    ended = time.perf_counter()
    writer.stop.set()
    writer.join(timeout=60)
    assert writer.error is None, writer.error
    copied = began + result.seconds  # the copy (its read transaction held) ends; the fsync and checksum follow
    during = [end - start for start, end in writer.commits if began < end < ended]
    phases = {
        "before it": [end - start for start, end in writer.commits if end < began],
        "during the copy": [end - start for start, end in writer.commits if began < end < copied],
        "during fsync and checksum": [end - start for start, end in writer.commits if copied < end < ended],
    }
    print(f"\nsnapshot of {FILLER_MB} MB and more: {ended - began:.3f}s (copy {result.seconds:.3f}s); commits:")
    for phase, times in phases.items():
        if times:
            print(
                f"  {phase}: {len(times)}, median {statistics.median(times) * 1000:.1f} ms, "
                f"max {max(times) * 1000:.1f} ms"
            )
    # Blocked writers would commit nothing until the snapshot ends: they go on (a generous bound, no tight timing).
    assert len(during) >= 3 and max(during) < ended - began
    with sqlite3.connect(result.path) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # a standalone file
    drill = run_drill(result.path)  # restored into a scratch database, audit verified, rows compared
    assert drill.ok, drill.problems
    assert drill.counts["tasks_task"]["restored"] >= 3 + 2


@sqlite_only
def test_rotation_keeps_the_newest_snapshots_here_and_in_the_second_location(live_db, user, settings, copies):  # noqa: F811
    settings.SQLITE_SNAPSHOT_KEEP = 2
    seed(user, count=1)
    taken = [take_snapshot() for _ in range(3)]
    assert all(result.copied for result in taken)
    assert taken[-1].rotated == [taken[0].path]
    assert snapshots() == [taken[1].path, taken[2].path]
    assert sorted(p.name for p in snapshot_dir().iterdir()) == sorted(
        f"{r.path.name}{suffix}" for r in taken[1:] for suffix in ("", ".sha256", ".manifest.json")
    )
    assert sorted(p.name for p in copies.iterdir()) == sorted(p.name for p in snapshot_dir().iterdir())


@sqlite_only
def test_restore_from_a_snapshot_round_trips_even_from_the_second_location(live_db, user, copies):  # noqa: F811
    seed(user)
    before = run("export", "--include-deleted")[1]
    result = take_snapshot()
    result.path.unlink()  # the disk lost it: `restore` reads the copy
    drop_everything()
    code, out = run("restore", str(result.path))
    assert code == 0, out
    assert run("export", "--include-deleted")[1] == before
    assert list(verify_audit_chains()) == []


@sqlite_only
def test_the_beat_job_looks_every_tick_and_snapshots_when_due_on_the_housekeeping_queue(live_db, settings):
    assert settings.SQLITE_SNAPSHOT_TICK_SECONDS == min(10.0, settings.SQLITE_SNAPSHOT_SECONDS / 10)
    assert django_settings.CELERY_BEAT_SCHEDULE["sqlite-snapshot"]["schedule"] == settings.SQLITE_SNAPSHOT_TICK_SECONDS
    assert route_task("crux.sqlite_snapshot", (), {}, {}) == {"queue": settings.CELERY_HOUSEKEEPING_QUEUE}
    written = sqlite_snapshot()
    assert written is not None and snapshots() == [snapshot_dir() / written.rsplit("/", 1)[1]]
    assert sqlite_snapshot() is None and len(snapshots()) == 1, "the one just taken is not due again"
    settings.SQLITE_SNAPSHOT_SECONDS = 0.001  # due at once
    assert sqlite_snapshot() is not None and len(snapshots()) == 2
    settings.SQLITE_SNAPSHOT_SECONDS = 0
    assert sqlite_snapshot() is None and len(snapshots()) == 2


@sqlite_only
def test_the_daily_backup_job_drills_the_newest_snapshot_as_well(live_db, user):
    seed(user, count=1)
    older, newest = take_snapshot(), take_snapshot()
    written = Path(daily_backup())
    drills = {drill.backup_name: drill for drill in BackupDrill.objects.all()}
    assert set(drills) == {written.name, newest.path.name}, "the backup and the newest snapshot, not the older one"
    assert older.path.name not in drills
    assert all(drill.ok and drill.trigger == DrillTrigger.AFTER_BACKUP for drill in drills.values())


def fake_snapshot(taken_at: datetime, took: float | None) -> Path:
    """A snapshot file named for ``taken_at`` whose manifest was written ``took`` seconds later (None: no manifest
    yet, the file itself still being written as of now)."""
    snapshot_dir().mkdir(parents=True, exist_ok=True)
    path = snapshot_dir() / f"{PREFIX}{taken_at.strftime(NAME_TIME)}.sqlite3"
    path.write_bytes(b"")
    if took is not None:
        manifest = Path(f"{path}.manifest.json")
        manifest.write_text("{}")
        finished = (taken_at + timedelta(seconds=took)).timestamp()
        os.utime(manifest, (finished, finished))
    return path


def test_a_snapshot_starts_early_by_the_last_ones_duration_so_the_recovery_point_stays_within_the_interval(
    settings,
):
    settings.SQLITE_SNAPSHOT_SECONDS, settings.SQLITE_SNAPSHOT_TICK_SECONDS = 300.0, 10.0
    assert snapshot_due(), "no snapshot yet: one is due at once"
    taken = datetime(2026, 12, 1, 6, 0, 0, 250000, tzinfo=UTC)
    path = fake_snapshot(taken, took=26.5)
    assert moment(path) == taken and duration(path) == timedelta(seconds=26.5)
    start_by = taken + timedelta(seconds=300 - 26.5 - 10)
    assert not snapshot_due(start_by - timedelta(seconds=1))
    assert snapshot_due(start_by)
    # Started at the latest one tick later, a snapshot that takes as long is whole by the interval's end.
    assert start_by + timedelta(seconds=10 + 26.5) == taken + timedelta(seconds=300)


def test_no_snapshot_starts_beside_one_still_being_written(settings):
    settings.SQLITE_SNAPSHOT_SECONDS, settings.SQLITE_SNAPSHOT_TICK_SECONDS = 300.0, 10.0
    fake_snapshot(datetime.now(UTC) - timedelta(seconds=600), took=20)
    assert snapshot_due()
    fake_snapshot(datetime.now(UTC) - timedelta(seconds=2), took=None)  # its copy is under way
    assert not snapshot_due()


@pytest.mark.skipif(ON_SQLITE, reason="what PostgreSQL does instead of SQLite snapshots")
@pytest.mark.django_db
def test_on_postgresql_no_snapshot_is_taken():
    assert "sqlite-snapshot" not in django_settings.CELERY_BEAT_SCHEDULE
    assert sqlite_snapshot() is None
    with pytest.raises(BackupError, match="WAL"):
        take_snapshot()
    assert not snapshot_dir().exists()
