"""Verify every task's history hash chain; exit 1 if any link is broken."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from tasks.models import Task
from tasks.selectors import verify_audit_chains


class Command(BaseCommand):
    help = (
        "Recompute the hash chain of every task's history and report each edited, removed or "
        "inserted row. Exit status: 0 all chains intact, 1 broken chains found, 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="tasks checked per query (default 500)")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args: Any, batch_size: int, no_progress: bool, **options: Any) -> None:
        if batch_size < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        total = Task.objects.count()
        broken_tasks: set[str] = set()
        problems = 0
        with tqdm(total=total, unit="task", disable=no_progress, file=self.stderr) as bar:
            for problem in verify_audit_chains(batch_size=batch_size, progress=bar.update):
                problems += 1
                broken_tasks.add(problem.task_id)
                tqdm.write(f"BROKEN {problem}", file=self.stdout)
        if problems:
            self.stdout.write(f"verify_audit: {problems} problem(s) in {len(broken_tasks)} of {total} task chains")
            raise SystemExit(1)
        self.stdout.write(f"verify_audit: all {total} task chains intact")
