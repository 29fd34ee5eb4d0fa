"""Restore a backup file, or one purged task from its archive."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from persistence.backup import BackupError, load_backup
from retention.archive import ArchiveError
from retention.services import unarchive_task
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData, TaskError, TaskNotFound


def pending_migrations() -> int:
    """How many migrations this database still lacks (all of them in a fresh, empty one)."""
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


class Command(BaseCommand):
    help = (
        "Restore a backup made by `backup` into a fresh, migrated database, or (--task ID) bring one "
        "purged task back from its archive, found through the purge ledger: task, history (its hash chain "
        "intact), outputs and metrics. Idempotent; a live task is not overwritten without --force. A backup file "
        "or archive missing or corrupt here is read from the second location (BACKUP_COPY_DIR) if it holds a copy. "
        "Exit status: 0 restored (or already restored), 1 refused or failed, 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup_file", nargs="?", help="a .sqlite3 or .jsonl.gz file written by `backup`")
        parser.add_argument("--task", help="restore this purged task from its archive")
        parser.add_argument("--force", action="store_true", help="replace a live task (it is archived first)")
        parser.add_argument("--actor", default="ops:command-line", help="who restores (recorded in history)")

    def handle(self, *args: Any, backup_file: str | None, task: str | None, force: bool, actor: str, **o: Any) -> None:
        if bool(backup_file) == bool(task):
            self.stderr.write("give either a backup file or --task ID")
            raise SystemExit(2)
        try:
            pending = pending_migrations()
        except DatabaseError as exc:
            self.stderr.write(f"restore refused: the database cannot be read ({str(exc).strip().splitlines()[0]})")
            raise SystemExit(1) from None
        if pending:
            self.stderr.write(
                f"restore refused: the database is not migrated ({pending} migrations pending); "
                "run `python manage.py migrate` first, then restore"
            )
            raise SystemExit(1)
        if task:
            try:
                result = unarchive_task(task, actor=actor, channel=Channel.COMMAND, force=force)
            except InvalidTaskData as exc:
                self.stderr.write(str(exc))
                raise SystemExit(2) from None
            except TaskNotFound:
                self.stderr.write(f"task {task} is not in the purge ledger: nothing to restore (try `locate`)")
                raise SystemExit(1) from None
            except (TaskError, ArchiveError) as exc:
                self.stderr.write(f"restore refused: {exc}")
                raise SystemExit(1) from None
            self.stdout.write(f"restore: task {result.task_id} {result.outcome} from {result.ledger.archive_file}")
            return
        assert backup_file  # exactly one of the two was given (checked above)
        try:
            count = load_backup(Path(backup_file))
        except (BackupError, OSError) as exc:
            self.stderr.write(f"restore refused: {exc}")
            raise SystemExit(1) from None
        self.stdout.write(f"restore: {backup_file} restored ({count} rows); run `verify_audit` and `reconcile` next")
