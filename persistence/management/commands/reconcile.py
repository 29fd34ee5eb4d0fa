"""Rebuild the Redis mirror from SQL and report drift."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from redis.exceptions import RedisError
from tqdm import tqdm

from persistence.services import reconcile_mirror


class Command(BaseCommand):
    help = (
        "Compare the Redis mirror with SQL (the source of truth) and rewrite missing, stale and "
        "orphan entries (of purged tasks) with pipelined writes. An entry whose task vanished from SQL without "
        "a purge tombstone is kept as evidence for verify_audit and locate, and reported. --check only reports. "
        "Exit status: 0 mirror consistent (or repaired), 1 drift found with --check or Redis unreachable, "
        "2 bad usage, 3 vanished tasks found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="report drift without repairing it")
        parser.add_argument("--batch-size", type=int, default=2000, help="entries per Redis pipeline (default 2000)")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
        parser.add_argument(
            "--forget-vanished",
            action="store_true",
            help="also drop the entries of tasks gone from SQL without a tombstone (once investigated)",
        )

    def handle(
        self, *args: Any, check: bool, batch_size: int, no_progress: bool, forget_vanished: bool, **options: Any
    ) -> None:
        if batch_size < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        try:
            with tqdm(unit="entry", disable=no_progress, file=self.stderr) as bar:
                report = reconcile_mirror(
                    check_only=check, batch_size=batch_size, progress=bar.update, forget_vanished=forget_vanished
                )
        except RedisError as exc:
            self.stderr.write(f"reconcile: Redis unreachable, nothing reconciled: {exc}")
            raise SystemExit(1) from None
        for example in report.examples:
            self.stdout.write(f"  {example}")
        action = "found" if check else "repaired"
        self.stdout.write(
            f"reconcile: checked {report.checked} entries, missing {report.missing}, stale {report.stale}, "
            f"orphan {report.orphan}, vanished {report.vanished}; "
            f"{action} {report.repaired if not check else report.drift} in {report.duration:.2f}s"
        )
        if report.vanished and not forget_vanished:
            self.stderr.write(
                f"reconcile: {report.vanished} task(s) gone from SQL without a purge tombstone; their mirror "
                "entries are kept as evidence: run verify_audit, then --forget-vanished once investigated"
            )
            raise SystemExit(3)
        if check and report.drift:
            raise SystemExit(1)
