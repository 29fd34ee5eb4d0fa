"""Recovery objectives, measured: the restore time (RTO) of a backup and the recovery point (RPO) of each mode.

    python -m bench.restore --engine sqlite --tasks 1000000
    python -m bench.restore --engine postgres --tasks 10000                      # a quick run, both restores
    python -m bench.restore --engine postgres --tasks 1000000 --only physical    # pgBackRest's restore alone

On the realistic data set (``crux_bench_<N>``, shared with bench.locate and bench.admin, built on first use), writes
a JSON backup (both engines) and, on SQLite, a snapshot (an online copy: ``backup --format sqlite`` writes the same
file and restores the same way), then restores each as an operator would after losing the database: into a new,
empty database, ``manage.py migrate`` then ``manage.py restore FILE``, each a process of its own, and ``manage.py
verify_audit`` on the result. The restore command's time is the RTO the goal (5 minutes at 1M tasks) is about;
migrate and verify_audit are shown beside it.

On PostgreSQL the bench also measures the physical restore, pgBackRest's (README, "Point-in-time recovery"), as an
operator lives it, on a private cluster (``bench.pg_cluster``, in a temporary directory, removed at the end, also on
failure) configured as README says: fsync on (the server's default: the figures are what production pays), WAL
archived by ``pgbackrest archive-push``, ``--compress-type`` lz4 by default (Debian's pgbackrest has lz4 and zst;
lz4 costs the least CPU to decompress, which is on the restore's path). The same data set is built into it, then
``pgbackrest backup --type=full`` (timed), then 500 tasks submitted through ``tasks.services`` after the backup (so
the restore replays WAL) and an audit checkpoint written (as beat does hourly: ``verify_audit`` compares the restored
chains with it), the WAL archived; then the loss: the server killed (``pg_ctl stop -m immediate``) and its data
directory deleted whole. The RTO is ``pgbackrest restore`` (``--process-max``) + ``pg_ctl start`` + the WAL replay
until the server accepts writes. The restored database must hold every row of every backed-up table the lost one
held (the post-backup tasks included); ``manage.py verify_audit`` runs on it after, timed.

``--only backup`` measures the ``manage.py restore`` legs alone, ``--only physical`` the pgBackRest leg alone (which
builds its data set in the private cluster, so the shared ``crux_bench_<N>`` is not needed); with neither, on
PostgreSQL, the physical leg runs after the others in a process of its own (Django serves one database a process).

The RPO of each mode is what its configuration bounds, with what was measured here added: SQLite with snapshots
loses at most the snapshot interval less the time the previous snapshot took plus the time the next one takes (each
starts early by its predecessor's duration: ``persistence.snapshots.snapshot_due``), measured on two snapshots taken
one after the other; PostgreSQL with WAL archiving at most ``archive_timeout`` (60 s in README's configuration),
either engine with backups alone the backup interval.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from bench.dataset import ROOT, configure, ensure, git_revision
from bench.pg_cluster import missing_tools, private_cluster
from bench.report import record

RTO_GOAL_SECONDS = 300
ARCHIVE_TIMEOUT_SECONDS = 60  # README, "Point-in-time recovery (PostgreSQL)": postgresql.conf's archive_timeout
AFTER_BACKUP_TASKS = 500  # submitted after the full backup: the WAL the physical restore replays
RECOVERY_TIMEOUT_SECONDS = 3600


class _Common(TypedDict):
    """What every result of one run records alike (``bench.report.record``'s keywords)."""

    engine: str
    size: int
    unit: str


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


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def row(name: str, seconds: float, detail: str = "") -> None:
    print(f"{name:<62} {seconds:>9.1f}  {detail}".rstrip())


def header(engine: str, tasks: int, history: int, what: str) -> None:
    print(f"\n{what} — engine {engine}, {tasks} tasks, {history} history rows, revision {git_revision()}")
    print(f"{'measure':<62} {'seconds':>9}  detail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the data set (default 1000000)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--fresh", action="store_true", help="rebuild the data set")
    parser.add_argument(
        "--only",
        choices=["backup", "physical"],
        help="backup: the manage.py restore legs alone; physical: pgBackRest's restore alone (PostgreSQL)",
    )
    parser.add_argument("--compress-type", choices=["lz4", "zst", "gz", "none"], default="lz4", help="pgBackRest's")
    parser.add_argument("--process-max", type=int, default=2, help="pgBackRest's processes for backup and restore")
    args = parser.parse_args()
    if args.only == "physical" and args.engine != "postgres":
        raise SystemExit("the physical restore is PostgreSQL's (pgBackRest): use --engine postgres")
    if args.only == "physical":
        physical(args.tasks, args.compress_type, args.process_max)
        return
    restore_backups(args.engine, args.tasks, fresh=args.fresh)
    if args.engine == "postgres" and args.only is None:
        command = [sys.executable, "-m", "bench.restore", "--engine", "postgres", "--tasks", str(args.tasks)]
        command += ["--only", "physical", "--compress-type", args.compress_type, "--process-max", str(args.process_max)]
        subprocess.run(command, cwd=ROOT, check=True)


def restore_backups(engine: str, count: int, *, fresh: bool) -> None:
    """The ``manage.py restore`` legs (a JSON backup; on SQLite a snapshot too) and the RPO of each mode."""
    os.environ["BACKUP_DIR"] = str(ROOT / "var" / "bench" / f"backups_restore_{engine}_{count}")
    os.environ.pop("BACKUP_COPY_DIR", None)  # restores read this machine's files: no second location to fall back to
    configure(engine, f"crux_bench_{count}", fresh=fresh)
    from django.conf import settings

    from persistence.backup import backup, backups, remove
    from persistence.drills import scratch_database
    from persistence.snapshots import duration, snapshots, take_snapshot
    from tasks.models import Task, TaskHistory

    ensure(count)
    for old in [*backups(), *snapshots()]:
        remove(old)
    tasks, history = Task.objects.count(), TaskHistory.objects.count()
    sqlite = engine == "sqlite"
    written: list[tuple[str, Path, float]] = []
    started = time.perf_counter()
    result = backup("json")
    written.append(("json backup", result.path, time.perf_counter() - started))
    took: list[float] = []  # SQLite: two snapshots one after the other, each to its manifest (persistence.snapshots)
    if sqlite:
        started = time.perf_counter()
        snap = take_snapshot()
        written.append(("snapshot", snap.path, time.perf_counter() - started))
        took = [duration(snap.path).total_seconds(), duration(take_snapshot().path).total_seconds()]

    header(engine, tasks, history, "restore benchmark")
    common: _Common = {"engine": engine, "size": tasks, "unit": "s"}
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
        interval = settings.SQLITE_SNAPSHOT_SECONDS
        rpo = interval - took[0] + took[1]
        row(f"SQLite, snapshots every {interval:.0f} s, each started early by the last one's time", rpo,
            f"interval - {took[0]:.1f} s + {took[1]:.1f} s (two snapshots in a row)")  # fmt: skip
        record(
            section="restore",
            measure=f"RPO, SQLite with snapshots every {interval:.0f} s (interval - {took[0]:.1f} s + {took[1]:.1f} s: "
            "the last snapshot's time and the next one's)",
            value=rpo,
            goal="≤ the snapshot interval (± the difference of two snapshots' times)",
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


def physical(count: int, compress_type: str, process_max: int) -> None:
    """pgBackRest's full backup of a private cluster holding the data set, work after it, the cluster's loss, and its
    restore until it accepts writes again (the RTO); every row of the lost database must come back."""
    missing = missing_tools()
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not installed: make pgbackrest (initdb and pg_ctl come with PostgreSQL)"
        )
    port = 15400 + os.getpid() % 500
    with private_cluster("crux-bench-restore-", port, compress_type=compress_type) as cluster:
        cluster.pgbackrest("stanza-create")
        os.environ["BENCH_PG_URL"] = cluster.base_url
        # The audit checkpoints of this cluster alone (not the JSON leg's, not var/backups'), removed with it.
        os.environ["BACKUP_DIR"] = str(cluster.root / "crux")
        for inherited in ("AUDIT_CHECKPOINT_DIR", "BACKUP_COPY_DIR"):
            os.environ.pop(inherited, None)
        configure("postgres", "crux", fresh=True)
        from django.db import connection

        from persistence.backup import row_counts
        from tasks.checkpoints import write_checkpoint
        from tasks.models import Task, TaskHistory

        ensure(count)
        tasks, history = Task.objects.count(), TaskHistory.objects.count()
        backup_seconds = timed(
            lambda: cluster.pgbackrest("backup", "--type=full", f"--process-max={process_max}", timeout=None)
        )
        (info,) = json.loads(cluster.pgbackrest("info", "--output=json"))
        sizes = info["backup"][-1]["info"]
        after_backup_seconds = timed(submit_after_backup)
        write_checkpoint()  # beat's hourly one, the last before the loss: verify_audit compares the restored heads
        lost = row_counts()
        connection.close()
        cluster.wal_archived()

        cluster.stop("immediate")
        shutil.rmtree(cluster.data)
        restore_seconds = timed(
            lambda: cluster.pgbackrest("restore", f"--process-max={process_max}", timeout=RECOVERY_TIMEOUT_SECONDS)
        )
        start_seconds = timed(lambda: cluster.start(timeout=RECOVERY_TIMEOUT_SECONDS))
        replay_seconds = timed(lambda: cluster.writable(timeout=RECOVERY_TIMEOUT_SECONDS))
        rto = restore_seconds + start_seconds + replay_seconds
        restored = row_counts()
        if restored != lost:
            differ = {table: (lost[table], restored.get(table)) for table in lost if restored.get(table) != lost[table]}
            raise SystemExit(f"the restored cluster does not hold what the lost one did (lost, restored): {differ}")
        connection.close()
        verify = manage(cluster.url, "verify_audit")

    header("postgres", tasks, history, f"physical restore (pgBackRest, {compress_type}, process-max {process_max})")
    row(
        "pgbackrest backup --type=full",
        backup_seconds,
        f"database {sizes['size'] / 1e6:,.0f} MB, repository {sizes['repository']['size'] / 1e6:,.0f} MB",
    )
    row(f"  then {AFTER_BACKUP_TASKS} tasks submitted (services.submit_task)", after_backup_seconds)
    row("restore after the loss (RTO): the three steps below", rto, f"{tasks / rto:,.0f} tasks/s, every row back")
    row(f"  pgbackrest restore --process-max={process_max}", restore_seconds)
    row("  pg_ctl start (until it accepts connections)", start_seconds)
    row("  WAL replay until it accepts writes", replay_seconds)
    row("after it: manage.py verify_audit (chains and checkpoint)", verify)
    common: _Common = {"engine": "postgres", "size": tasks, "unit": "s"}
    record(
        section="restore",
        measure=f"pgbackrest backup --type=full ({compress_type}, process-max {process_max})",
        value=backup_seconds,
        **common,
    )
    record(
        section="restore",
        measure=f"physical restore of the cluster, pgBackRest (RTO: restore {restore_seconds:.0f} s + start "
        f"{start_seconds:.0f} s + WAL replay {replay_seconds:.0f} s until writable; verify_audit {verify:.0f} s after)",
        value=rto,
        goal=f"≤ {RTO_GOAL_SECONDS} s at 1M tasks",
        met=rto <= RTO_GOAL_SECONDS if tasks >= 1_000_000 else None,
        **common,
    )


def submit_after_backup() -> None:
    """Work committed after the full backup, through the service every channel uses: the restore must replay it. Due
    tomorrow, so each task waits in SQL and no broker sees it (no worker of another run picks it up)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from tasks import services
    from tasks.audit import Channel

    owner, _ = get_user_model().objects.get_or_create(username="bench-restore")
    tomorrow = timezone.now() + timedelta(days=1)
    for i in range(AFTER_BACKUP_TASKS):
        services.submit_task(
            owner=owner, actor=owner, channel=Channel.API, title=f"after the backup {i}", run_at=tomorrow
        )


if __name__ == "__main__":
    main()
