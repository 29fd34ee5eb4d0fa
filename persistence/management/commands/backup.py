"""Make a consistent online backup into BACKUP_DIR and rotate old ones."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from persistence.backup import BackupError, backup


class Command(BaseCommand):
    help = (
        "Write a consistent online backup to BACKUP_DIR: on SQLite a copy through the online backup API "
        "(--format sqlite, the default there), on any engine a portable JSON-lines export of every Crux "
        "table (--format json). Writes a .sha256 and a .manifest.json (rows per table) next to it, copies the "
        "three to BACKUP_COPY_DIR (the backups_copy storage) if set, and deletes backups older than "
        "BACKUP_RETENTION_DAYS but the newest whose drill passed. Exit status: 0 written, 1 failed (or not "
        "copied), 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["sqlite", "json"], default=None, dest="fmt")

    def handle(self, *args: Any, fmt: str | None, **options: Any) -> None:
        try:
            result = backup(fmt)
        except (BackupError, OSError) as exc:
            self.stderr.write(f"backup failed: {exc}")
            raise SystemExit(1) from None
        rotated = f"; rotated out {len(result.rotated)} old backup(s)" if result.rotated else ""
        copied = "; copied to the second location" if result.copied else ""
        self.stdout.write(f"backup: {result.path} ({result.checksum}, {result.rows} rows/tasks){rotated}{copied}")
        if result.copy_problem:
            self.stderr.write(f"backup written, but {result.copy_problem}")
            raise SystemExit(1)
