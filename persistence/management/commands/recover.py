"""Startup recovery: interrupt orphaned tasks, re-publish lost messages, rebuild the mirror."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from redis.exceptions import RedisError

from persistence.dispatch import redispatch_lost
from persistence.services import reconcile_mirror
from tasks import selectors, services
from tasks.states import TaskState


class Command(BaseCommand):
    help = (
        "Recover after a restart or crash: running tasks whose lease expired become interrupted, "
        "then are requeued until their attempt limit or failed; queued tasks whose message was lost "
        "are re-published; the Redis mirror is rebuilt from SQL. Prints a summary. Exit status: 0 done, "
        "1 part of the recovery could not run (e.g. Redis unreachable), 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--redispatch-after",
            type=float,
            default=None,
            help="re-publish queued tasks whose publish the broker has not confirmed for this many seconds "
            "(default REDISPATCH_AFTER_SECONDS); those whose broker epoch is gone are re-published at once",
        )
        parser.add_argument("--skip-mirror", action="store_true", help="do not rebuild the Redis mirror")

    def handle(self, *args: Any, redispatch_after: float | None, skip_mirror: bool, **options: Any) -> None:
        if redispatch_after is not None and redispatch_after < 0:
            self.stderr.write("--redispatch-after must not be negative")
            raise SystemExit(2)
        started = time.perf_counter()
        by_state = selectors.count_by_state(include_deleted=True)
        checked = by_state[TaskState.RUNNING] + by_state[TaskState.QUEUED]
        counts = services.recover_orphans()
        mirror_note, failed_part = "skipped", False
        try:
            redispatched: int | str = redispatch_lost(base_seconds=redispatch_after)
        except RedisError as exc:
            redispatched, failed_part = f"none (the broker's Redis is unreachable: {exc})", True
        if not skip_mirror:
            try:
                report = reconcile_mirror()
                mirror_note = f"{report.checked} entries checked, {report.repaired} rewritten"
            except RedisError as exc:
                mirror_note, failed_part = f"NOT rebuilt, Redis unreachable ({exc})", True
        self.stdout.write(
            f"recover: checked {checked} active tasks; interrupted {counts['interrupted']}, "
            f"requeued {counts['requeued']}, failed {counts['failed']}, re-dispatched {redispatched}; "
            f"mirror {mirror_note}; {time.perf_counter() - started:.2f}s"
        )
        if failed_part:
            raise SystemExit(1)
