"""Restore-test a backup: restore it into a scratch database, verify its audit trail, compare its row counts."""

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from persistence.backup import BackupError
from persistence.drills import DrillError, restore_and_verify, run_drill
from persistence.models import DrillTrigger


class Command(BaseCommand):
    help = (
        "Restore a backup (default: the newest in BACKUP_DIR) into a scratch database (SQLite: a temporary file; "
        "PostgreSQL: a database <name>_drill_<pid>, dropped afterwards), verify its audit trail and compare the "
        "rows of each table with those recorded when it was made. The drill is recorded (admin: Persistence > "
        "Backup drills) and a failure raises the alert. Exit status: 0 passed, 1 failed, 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup_file", nargs="?", help="a .sqlite3 or .jsonl.gz file written by `backup`")
        parser.add_argument("--actor", default="ops:command-line", help="who runs the drill (recorded)")
        # The drill's child process, on the scratch database: restore, count, verify; prints a JSON report.
        parser.add_argument("--in-scratch", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args: Any, backup_file: str | None, actor: str, in_scratch: bool, **options: Any) -> None:
        if in_scratch:
            if not backup_file:
                raise SystemExit(2)
            try:
                report = restore_and_verify(Path(backup_file))
            except (BackupError, OSError) as exc:
                self.stderr.write(f"scratch restore failed: {exc}")
                raise SystemExit(1) from None
            self.stdout.write(json.dumps(report))
            return
        try:
            drill = run_drill(Path(backup_file) if backup_file else None, trigger=DrillTrigger.COMMAND, actor=actor)
        except DrillError as exc:
            self.stderr.write(f"drill_backup: {exc}")
            raise SystemExit(1) from None
        for problem in drill.problems:
            self.stdout.write(f"PROBLEM {problem}")
        verdict = "passed" if drill.ok else "FAILED"
        self.stdout.write(
            f"drill_backup: {drill.backup_name} {verdict} in {drill.duration_seconds:.1f}s "
            f"({len(drill.counts)} tables' rows compared, {len(drill.problems)} problem(s))"
        )
        if not drill.ok:
            raise SystemExit(1)
