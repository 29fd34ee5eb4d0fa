"""Recovery objectives, measured: the restore time (RTO) of a backup and the recovery point (RPO) of each mode.

    python -m bench.restore --engine sqlite --tasks 1000000
    python -m bench.restore --engine postgres --tasks 10000      # a quick run

On the realistic data set (``crux_bench_<N>``, shared with bench.locate and bench.admin, built on first use), writes
a JSON backup (both engines) and, on SQLite, a snapshot (an online copy: ``backup --format sqlite`` writes the same
file and restores the same way), then restores each as an operator would after losing the database: into a new,
empty database, ``manage.py migrate`` then ``manage.py restore FILE``, each a process of its own, and ``manage.py
verify_audit`` on the result. The restore command's time is the RTO the goal (5 minutes at 1M tasks) is about;
migrate and verify_audit are shown beside it.

The RPO of each mode is what its configuration bounds, with what was measured here added: SQLite with snapshots
loses at most the snapshot interval plus the time one snapshot takes (measured), PostgreSQL with WAL archiving at
most ``archive_timeout`` (60 s in README's configuration), either engine with backups alone the backup interval.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.dataset import ROOT, configure, ensure, git_revision
from bench.report import record

RTO_GOAL_SECONDS = 300
ARCHIVE_TIMEOUT_SECONDS = 60  # README, "Point-in-time recovery (PostgreSQL)": postgresql.conf's archive_timeout


def manage(url: str, *args: str) -> float:
    """Run ``manage.py args`` on the database at ``url`` in a process of its own; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the data set (default 1000000)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--fresh", action="store_true", help="rebuild the data set")
    args = parser.parse_args()
    os.environ["BACKUP_DIR"] = str(ROOT / "var" / "bench" / f"backups_restore_{args.engine}_{args.tasks}")
    os.environ.pop("BACKUP_COPY_DIR", None)  # restores read this machine's files: no second location to fall back to
    configure(args.engine, f"crux_bench_{args.tasks}", fresh=args.fresh)
    from django.conf import settings

    from persistence.backup import backup, backups, remove
    from persistence.drills import scratch_database
    from persistence.snapshots import snapshots, take_snapshot
    from tasks.models import Task, TaskHistory

    ensure(args.tasks)
    for old in [*backups(), *snapshots()]:
        remove(old)
    tasks, history = Task.objects.count(), TaskHistory.objects.count()
    sqlite = args.engine == "sqlite"
    written: list[tuple[str, Path, float]] = []
    started = time.perf_counter()
    result = backup("json")
    written.append(("json backup", result.path, time.perf_counter() - started))
    snapshot_seconds = None
    if sqlite:
        started = time.perf_counter()
        snap = take_snapshot()
        snapshot_seconds = time.perf_counter() - started
        written.append(("snapshot", snap.path, snapshot_seconds))

    print(
        f"\nrestore benchmark — engine {args.engine}, {tasks} tasks, {history} history rows, revision {git_revision()}"
    )
    print(f"{'measure':<62} {'seconds':>9}  detail")

    def row(name: str, seconds: float, detail: str = "") -> None:
        print(f"{name:<62} {seconds:>9.1f}  {detail}".rstrip())

    common = {"engine": args.engine, "size": tasks, "unit": "s"}
    for kind, path, seconds in written:
        row(f"write the {kind}", seconds, f"{path.name}, {path.stat().st_size / 1e6:,.0f} MB")
    for kind, path, _ in written:
        with scratch_database() as url:
            migrate = manage(url, "migrate", "--verbosity", "0")
            restore = manage(url, "restore", str(path))
            verify = manage(url, "verify_audit")
        met = restore <= RTO_GOAL_SECONDS
        row(f"restore the {kind} (RTO): manage.py restore", restore, f"{tasks / restore:,.0f} tasks/s")
        row("  before it: manage.py migrate on the empty database", migrate)
        row("  after it: manage.py verify_audit (chains and checkpoint)", verify)
        record(
            section="restore",
            measure=f"restore of the {kind} into an empty database (RTO; migrate {migrate:.0f} s before it, "
            f"verify_audit {verify:.0f} s after it)",
            value=restore,
            goal=f"≤ {RTO_GOAL_SECONDS} s at 1M tasks",
            met=met if tasks >= 1_000_000 else None,
            **common,
        )

    backup_interval = settings.BACKUP_SECONDS
    print("\nrecovery point (RPO): the most committed work a lost database can cost")
    if sqlite:
        assert snapshot_seconds is not None
        interval = settings.SQLITE_SNAPSHOT_SECONDS
        rpo = interval + snapshot_seconds
        row(f"SQLite, snapshots every {interval:.0f} s: interval + one snapshot", rpo)
        record(
            section="restore",
            measure=f"RPO, SQLite with snapshots every {interval:.0f} s (interval + {snapshot_seconds:.1f} s snapshot)",
            value=rpo,
            goal="≈ the snapshot interval",
            **common,
        )
    else:
        row(f"PostgreSQL, WAL archiving: archive_timeout {ARCHIVE_TIMEOUT_SECONDS} s", ARCHIVE_TIMEOUT_SECONDS)
        record(
            section="restore",
            measure=f"RPO, PostgreSQL with WAL archiving (archive_timeout {ARCHIVE_TIMEOUT_SECONDS} s)",
            value=ARCHIVE_TIMEOUT_SECONDS,
            goal="≤ 60 s",
            met=True,
            **common,
        )
    row(f"{'SQLite' if sqlite else 'PostgreSQL'}, backups alone: the backup interval", backup_interval)
    record(section="restore", measure="RPO, backups alone (BACKUP_SECONDS)", value=backup_interval, **common)
    for old in [*backups(), *snapshots()]:
        remove(old)


if __name__ == "__main__":
    main()
