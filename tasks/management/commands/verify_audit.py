"""Verify the whole audit trail: keyed history chains, the newest checkpoint, the purge ledger; exit 1 if broken."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from tasks import checkpoints
from tasks.models import Task
from tasks.selectors import verify_audit_chains


class Command(BaseCommand):
    help = (
        "Check every task's history chain (HMAC under the audit keys: an edited, removed, inserted or "
        "recomputed row is named), compare the database with the newest signed checkpoint in "
        "AUDIT_CHECKPOINT_DIR (a task vanished without a valid tombstone, a chain cut or rewritten since), "
        "check the purge ledger's signed tombstones and report purge grants left or forged. "
        "Exit status: 0 all intact, 1 problems found, 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="tasks checked per query (default 500)")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args: Any, batch_size: int, no_progress: bool, **options: Any) -> None:
        if batch_size < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        newest, unreadable = checkpoints.newest()
        if newest is None:
            self.stdout.write(
                "verify_audit: no valid checkpoint yet: a task removed whole is named only if the Redis mirror "
                "or Celery's results saw it"
            )
        else:
            self.stdout.write(
                f"verify_audit: against checkpoint {newest.name} ({newest.tasks} tasks, "
                f"created {newest.created_at:%Y-%m-%d %H:%M:%S}Z)"
            )
        total = Task.objects.count()
        subjects: set[str] = set()
        problems = 0
        with tqdm(total=total, unit="task", disable=no_progress, file=self.stderr) as bar:
            for problem in verify_audit_chains(
                batch_size=batch_size, progress=bar.update, checkpoint=(newest, unreadable)
            ):
                problems += 1
                subjects.add(problem.subject)
                tqdm.write(f"BROKEN {problem}", file=self.stdout)
        if problems:
            self.stdout.write(
                f"verify_audit: {problems} problem(s) in {len(subjects)} subject(s); {total} task chains checked"
            )
            raise SystemExit(1)
        self.stdout.write(f"verify_audit: all {total} task chains intact")
