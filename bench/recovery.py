"""Startup recovery at scale: mirror rebuild + lease check + re-dispatch check.

    python -m bench.recovery --tasks 100000 --engine sqlite

Builds a data set of live tasks (queued, and running with valid leases), empties
the Redis mirror, and times what ``manage.py recover`` does. The baseline,
measured in the same run, is a raw pipelined SET of the same documents (what
the mirror rebuild cannot beat). A second figure times the recovery of tasks
whose lease expired (interrupted + requeued, each with history rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.dataset import build, configure, git_revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="live tasks in the data set (default 100000)")
    parser.add_argument("--expired", type=int, default=1000, help="running tasks whose lease expired (default 1000)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported (default 3)")
    args = parser.parse_args()

    configure(args.engine, f"crux_bench_recovery_{args.tasks}")
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from crux.celery import app
    from persistence import mirror
    from persistence.services import reconcile_mirror
    from tasks import services
    from tasks.models import Task

    queue = f"{settings.REDIS_KEY_PREFIX}.celery"
    app.conf.task_default_queue = queue  # requeued tasks publish where no worker listens
    build(args.tasks, {"queued": 0.9, "running": 0.1})
    conn = mirror.client()

    def clear_mirror() -> None:
        keys = list(conn.scan_iter(match=f"{mirror.key_prefix()}*", count=5000))
        for start in range(0, len(keys), 5000):
            conn.delete(*keys[start : start + 5000])

    def recover_once() -> float:
        clear_mirror()
        started = time.perf_counter()
        services.recover_orphans()
        services.redispatch_stale()
        report = reconcile_mirror()
        elapsed = time.perf_counter() - started
        assert report.repaired == args.tasks, report
        return elapsed

    def raw_set_once() -> float:
        docs = [mirror.snapshot(v) for v in Task.objects.values(*mirror.MIRRORED_FIELDS)]
        payloads = [(mirror.task_key(d["id"]), json.dumps(d)) for d in docs]
        clear_mirror()
        started = time.perf_counter()
        for start in range(0, len(payloads), 2000):
            pipe = conn.pipeline(transaction=False)
            for key, value in payloads[start : start + 2000]:
                pipe.set(key, value)
            pipe.execute()
        return time.perf_counter() - started

    recover_once()  # warm-up: caches, connections, SQLite page cache
    recover_times = [recover_once() for _ in range(args.runs)]
    raw_times = [raw_set_once() for _ in range(args.runs)]

    expired_ids = list(Task.objects.filter(state="running").values_list("pk", flat=True)[: args.expired])
    Task.objects.filter(pk__in=expired_ids).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    started = time.perf_counter()
    counts = services.recover_orphans()
    expired_time = time.perf_counter() - started
    assert counts["requeued"] == len(expired_ids), counts

    clear_mirror()
    keys = list(conn.scan_iter(match=f"*{queue}*"))
    if keys:
        conn.delete(*keys)

    rebuild, raw = statistics.median(recover_times), statistics.median(raw_times)
    print(f"\nrecovery benchmark — engine {args.engine}, {args.tasks} live tasks, revision {git_revision()}")
    print(f"{'measure':<58} {'median':>10} {'runs':>24}")
    print(
        f"{'recover: lease check + re-dispatch check + mirror rebuild':<58} {rebuild:>9.3f}s "
        f"{', '.join(f'{t:.3f}' for t in recover_times):>24}"
    )
    print(
        f"{'baseline: raw pipelined SET of the same documents':<58} {raw:>9.3f}s "
        f"{', '.join(f'{t:.3f}' for t in raw_times):>24}"
    )
    print(f"{'ratio raw / recover (1.0 = as fast as a bare write)':<58} {raw / rebuild:>10.2f}")
    per_task = expired_time / max(1, len(expired_ids)) * 1000
    print(
        f"{f'expired leases recovered ({len(expired_ids)}, interrupt + requeue)':<58} {expired_time:>9.3f}s "
        f"{f'{per_task:.2f} ms/task':>24}"
    )


if __name__ == "__main__":
    main()
