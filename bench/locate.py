"""`locate` at scale (goal < 100 ms at 1M tasks).

    python -m bench.locate --tasks 1000000 --engine sqlite

On a realistic data set (reused between runs unless --fresh), soft-deletes and
purges a few tasks, then times ``crux.locate.locate`` for live,
soft-deleted, purged and never-existing ids. The baseline, in the same run, is
a bare primary-key fetch of the task row (what any lookup costs at least).
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from bench.dataset import configure, ensure, git_revision
from bench.report import report_timings

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--lookups", type=int, default=200, help="lookups per kind of id (default 200)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the data set")
    args = parser.parse_args()
    configure(args.engine, f"crux_bench_{args.tasks}", fresh=args.fresh)
    from django.conf import settings
    from django.utils import timezone

    from crux.locate import locate
    from retention.models import PurgeLedger
    from retention.services import purge
    from tasks import services
    from tasks.audit import Channel, audited
    from tasks.models import Task

    ensure(args.tasks)
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 10_000
    settings.BACKUP_DIR = settings.VAR_DIR / "bench" / "backups"
    rng = random.Random(3)
    ids = list(Task.objects.filter(deleted_at__isnull=True, state="completed").values_list("pk", flat=True)[:5000])
    sample = rng.sample(ids, args.lookups * 3)
    live, to_delete, to_purge = (sample[i * args.lookups : (i + 1) * args.lookups] for i in range(3))
    user = cast("User", Task.objects.get(pk=live[0]).owner)  # the data set's tasks all have an owner
    if not PurgeLedger.objects.exists():
        for pk in to_delete:
            services.soft_delete(pk, user=user, channel=Channel.COMMAND, reason="bench")
        old = timezone.now() - timedelta(days=365)
        for pk in to_purge:  # age them past the completed policy, oldest of all, so the purge takes exactly them
            task = Task.objects.get(pk=pk)
            task.completed_at, task.created_at = old, old
            with audited("bench", channel=Channel.COMMAND, reason="age for the purge"):
                task.save()
        settings.MAX_TASKS_PER_PURGE = args.lookups
        purge(actor="bench", channel=Channel.COMMAND, confirm=True, limit=args.lookups)
    deleted = list(Task.objects.deleted().values_list("pk", flat=True)[: args.lookups])
    purged = list(PurgeLedger.objects.values_list("task_id", flat=True)[: args.lookups])
    never = [uuid.uuid4() for _ in range(args.lookups)]

    def timed(fn: Callable[[uuid.UUID], object], keys: list[uuid.UUID]) -> list[float]:
        for key in keys[:10]:
            fn(key)  # warm-up
        out = []
        for key in keys:
            started = time.perf_counter()
            fn(key)
            out.append((time.perf_counter() - started) * 1000)
        return out

    rows = {
        "baseline: Task.objects.filter(pk=…).first()": timed(lambda k: Task.objects.filter(pk=k).first(), live),
        "locate: live task": timed(locate, live),
        "locate: soft-deleted task": timed(locate, deleted),
        "locate: purged task (ledger + archive checksum)": timed(locate, purged),
        "locate: never existed": timed(locate, never),
    }
    print(f"\nlocate benchmark — engine {args.engine}, {Task.objects.count()} tasks, revision {git_revision()}")

    def judge(name: str, figures: dict[str, float]) -> tuple[str, bool | None]:
        return ("< 100 ms", figures["p99"] < 100) if name.startswith("locate") else ("", None)

    report_timings("locate", rows, engine=args.engine, size=args.tasks,
                   baseline="baseline: Task.objects.filter(pk=…).first()", judge=judge)  # fmt: skip


if __name__ == "__main__":
    main()
