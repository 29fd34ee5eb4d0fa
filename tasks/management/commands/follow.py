"""Follow a task live, as one watches a log: its history rows, outputs and progress, read from SQL."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tasks.exceptions import InvalidTaskData
from tasks.ids import parse_task_id
from tasks.models import Task, TaskHistory
from tasks.selectors.events import Cursor, Progress, Row, events_after, newest_cursor, progress_of


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def describe(row: Row) -> list[str]:
    """The log line(s) of a history row or an output (one line per line of an output's text)."""
    if isinstance(row, TaskHistory):
        change = f"{row.state_from} -> {row.state_to}" if row.state_from else row.state_to
        why = f": {row.reason}" if row.reason else ""
        error = f" [{row.error_message}]" if row.error_message else ""
        return [f"{_stamp(row.created_at)}  {row.event:<11} {change}  by {row.actor} via {row.channel}{why}{error}"]
    label = f"output {row.output_type}"
    where = f" ({row.file_path})" if row.file_path else ""
    lines = (row.content or "").splitlines() or [""]
    return [f"{_stamp(row.created_at)}  {label:<11} {line}{where if i == 0 else ''}" for i, line in enumerate(lines)]


def describe_progress(progress: Progress) -> str:
    phase = f"  {progress.phase}" if progress.phase else ""
    return f"{_stamp(progress.updated_at)}  {'progress':<11} {progress.progress:6.1%}{phase}  ({progress.state})"


def take_back_ctrl_c() -> None:
    """SIGINT stops the follower wherever it was started: a process started where SIGINT is ignored (a shell's
    background job, ``nohup``, a supervisor) or blocked inherits that, and Python then raises no KeyboardInterrupt:
    a test's Ctrl-C once left it running."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Command(BaseCommand):
    help = (
        "Print a task's events live, read from SQL: each history row (state changes, edits, deletes), each output "
        "and each change of progress or phase, one log line each, until the task is finished. By default it "
        "prints the task's current state, then what happens next; --from-start prints its whole history first. "
        "Exit status: 0 the task finished, 1 no such task (or it was purged meanwhile), 2 malformed id, 130 "
        "interrupted (Ctrl-C)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_id", help="the task's id (UUID)")
        parser.add_argument(
            "--from-start", action="store_true", help="print every history row and output from the beginning"
        )
        parser.add_argument(
            "--interval", type=float, default=0.25, help="seconds between two looks at the database (default 0.25)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        take_back_ctrl_c()
        try:
            task_id = parse_task_id(options["task_id"])
        except InvalidTaskData as exc:
            self.stderr.write(f"follow: {'; '.join(exc.errors['task_id'])}")
            raise SystemExit(2) from None
        task = Task.objects.filter(pk=task_id).values("title", "state").first()
        if task is None:
            self.stderr.write(f"follow: no task with id {task_id}")
            raise SystemExit(1)
        try:
            cursor = Cursor() if options["from_start"] else newest_cursor()
            self.stdout.write(f"following task {task_id} ({task['title']}), {task['state']}; Ctrl-C stops")
            self.stdout.flush()
            self.follow(task_id, cursor, max(0.05, options["interval"]))
        except KeyboardInterrupt:
            self.stdout.write("follow: stopped")
            raise SystemExit(130) from None

    def follow(self, task_id: Any, cursor: Cursor, interval: float) -> None:
        shown: Progress | None = None
        while True:
            # The state first: once it is final, every row it was written with is in the read that follows.
            progress = progress_of([task_id]).get(task_id)
            complete = False
            while not complete:
                rows, complete = events_after([task_id], cursor)
                for row in rows:
                    cursor = cursor.after(row)
                    for line in describe(row):
                        self.stdout.write(line)
            if progress is None:
                self.stderr.write(f"follow: task {task_id} is gone (purged)")
                raise SystemExit(1)
            if not progress.same_figures(shown):
                self.stdout.write(describe_progress(progress))
                shown = progress
            if progress.finished:
                self.stdout.write(f"task {task_id} {progress.state}")
                return
            time.sleep(interval)
