"""What happened to a task? Every store, verdict first."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from crux.locate import locate
from tasks.exceptions import InvalidTaskData


class Command(BaseCommand):
    help = (
        "Answer 'what happened to this task?' from every store: the task row (live or soft-deleted, "
        "who, when, why), the purge ledger and archive, the Redis mirror, Celery's result and the last "
        "history rows, and the newest signed audit checkpoint for a task gone without a tombstone, with a one-line "
        "verdict first. Exit status: 0 found, 1 no location at all, 2 bad id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_id", help="the task's id (UUID)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print everything found as JSON")

    def handle(self, *args: Any, task_id: str, as_json: bool, **options: Any) -> None:
        try:
            location = locate(task_id)
        except InvalidTaskData as exc:
            self.stderr.write(str(exc))
            raise SystemExit(2) from None
        if as_json:
            self.stdout.write(json.dumps(location.as_dict(), default=str, indent=2))
        else:
            self._print(location)
        if not location.found:
            raise SystemExit(1)

    def _print(self, location: Any) -> None:
        self.stdout.write(f"{location.task_id}: {location.verdict}")
        if location.task:
            t = location.task
            self.stdout.write(f"  sql      : {t['state']}, created {t['created_at']}, updated {t['updated_at']}")
        for entry in location.ledger:
            self.stdout.write(
                f"  ledger   : purged {entry['purged_at']} by {entry['policy']} "
                f"({entry['actor']} via {entry['channel']}); "
                f"archive {entry['archive_file']} present={entry['archive_present']} intact={entry['archive_intact']}"
                + (f"; restored {entry['restored_at']} by {entry['restored_by']}" if entry["restored_at"] else "")
            )
        if location.checkpoint:
            cp = location.checkpoint
            self.stdout.write(
                f"  checkpoint: {cp['file']} ({cp['created_at']}): {cp['history_count']} history rows, "
                f"head {cp['history_head']}" + (f", backup {cp['backup']}" if cp["backup"] else "")
            )
        self.stdout.write(f"  mirror   : {location.mirror}")
        self.stdout.write(f"  celery   : {location.celery_result or 'no result record'}")
        for row in location.last_history:
            self.stdout.write(
                f"  history  : #{row['seq']} {row['created_at']} {row['event']} {row['state_from'] or '-'}->"
                f"{row['state_to']} by {row['actor']} via {row['channel']}: {row['reason']}"
            )
