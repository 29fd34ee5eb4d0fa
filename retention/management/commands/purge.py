"""Purge what the retention policies let go: dry run unless --confirm."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from retention.archive import ArchiveError
from retention.services import purge
from tasks.audit import Channel
from tasks.exceptions import TaskError


class Command(BaseCommand):
    help = (
        "Archive and remove the tasks that the retention policies let go, oldest first. Without --confirm "
        "this is a dry run that lists what would go and deletes nothing. Each run takes at most --limit "
        "tasks (MAX_TASKS_PER_PURGE), writes the archive before deleting and leaves a ledger row per task. "
        "Exit status: 0 done (or nothing to do), 1 refused or failed (nothing deleted), 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--confirm", action="store_true", help="really purge (default: dry run)")
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help=f"tasks in this run (default and maximum {settings.MAX_TASKS_PER_PURGE})",
        )
        parser.add_argument("--actor", default="ops:command-line", help="who runs this purge (recorded in the ledger)")

    def handle(self, *args: Any, confirm: bool, limit: int | None, actor: str, **options: Any) -> None:
        if limit is not None and not 1 <= limit <= settings.MAX_TASKS_PER_PURGE:
            self.stderr.write(f"--limit must be between 1 and {settings.MAX_TASKS_PER_PURGE}")
            raise SystemExit(2)
        try:
            report = purge(actor=actor, channel=Channel.COMMAND, confirm=confirm, limit=limit)
        except (TaskError, ArchiveError) as exc:
            self.stderr.write(f"purge refused, nothing deleted: {exc}")
            raise SystemExit(1) from None
        for item in report.selected:
            flag = " (soft-deleted)" if item["deleted"] else ""
            self.stdout.write(f"  {item['id']}  {item['state']:<11} {item['policy']:<18} {item['title']}{flag}")
        if report.dry_run:
            self.stdout.write(
                f"purge: dry run, {len(report.selected)} task(s) would be archived and removed "
                f"(limit {report.limit}); nothing deleted. Run again with --confirm to purge."
            )
            return
        self.stdout.write(
            f"purge: {report.purged} task(s) archived to {report.archive_file or '-'} "
            f"({report.archive_checksum or 'no archive'}) and removed; {report.skipped} no longer eligible"
        )
