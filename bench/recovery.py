"""Startup recovery at scale: mirror rebuild + lease check + re-dispatch check.

    python -m bench.recovery --tasks 100000 --engine sqlite

Builds a data set of live tasks (queued, and running with valid leases), empties
the Redis mirror, and times the mirror rebuild alone (``reconcile_mirror()``:
read SQL, encode, compare-and-write with the version check), then what
``manage.py recover`` does (``recover_orphans``, ``redispatch_lost`` and the
rebuild). The queued tasks are a backlog whose messages the broker holds: their
publishes confirmed under the broker's epoch, as the sweep leaves them, so the
re-dispatch check finds nothing lost whatever time the build took (by age, a
backlog older than REDISPATCH_AFTER_SECONDS would be published again whole,
which only a broker without an epoch does). The baseline, measured in the same
run and interleaved with them, is a raw pipelined SET of the same keys and the
same JSON documents, in batches of the same size, non-transactional (what the
rebuild cannot beat). A last figure times the recovery of tasks whose lease
expired (interrupted + requeued, each with history rows). Every figure is also
recorded for ``bench.report``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.dataset import build, configure, git_revision
from bench.report import record

BATCH = 2000  # entries per Redis round trip, for the rebuild and the baseline alike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="live tasks in the data set (default 100000)")
    parser.add_argument("--expired", type=int, default=1000, help="running tasks whose lease expired (default 1000)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported (default 3)")
    args = parser.parse_args()

    configure(args.engine, f"crux_bench_recovery_{args.tasks}", fresh=True)
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from crux.celery import app
    from persistence import dispatch, mirror
    from persistence.services import reconcile_mirror
    from tasks import services
    from tasks.models import Task
    from tasks.states import TERMINAL_STATES

    queue = f"{settings.REDIS_KEY_PREFIX}.celery"
    app.conf.task_default_queue = queue  # requeued tasks publish where no worker listens
    build(args.tasks, {"queued": 0.9, "running": 0.1})
    Task.objects.filter(state="queued").update(dispatch_epoch=dispatch.current_epoch(dispatch.client()))
    conn = mirror.client()

    def clear_mirror() -> None:
        keys = list(conn.scan_iter(match=f"{mirror.key_prefix()}*", count=5000))
        for start in range(0, len(keys), 5000):
            conn.delete(*keys[start : start + 5000])

    def rebuild_once() -> float:
        clear_mirror()
        started = time.perf_counter()
        report = reconcile_mirror(batch_size=BATCH)
        elapsed = time.perf_counter() - started
        assert report.repaired == report.missing == args.tasks, report
        return elapsed

    def recover_once() -> float:
        clear_mirror()
        started = time.perf_counter()
        services.recover_orphans()
        assert dispatch.redispatch_lost() == 0, "a message of the backlog was taken for lost"
        report = reconcile_mirror(batch_size=BATCH)
        elapsed = time.perf_counter() - started
        assert report.repaired == args.tasks, report
        return elapsed

    # The baseline's entries, built on the ORM path (snapshot + encode), not the
    # rebuild's; checked below to be byte for byte what the rebuild stores.
    docs = [mirror.snapshot(values) for values in Task.objects.values(*mirror.MIRRORED_FIELDS)]
    entries = [
        (
            mirror.task_key(doc["id"]),
            mirror.encode(doc),
            settings.MIRROR_TERMINAL_TTL if doc["state"] in TERMINAL_STATES else None,
        )
        for doc in docs
    ]
    del docs

    def raw_set_once() -> float:
        clear_mirror()
        started = time.perf_counter()
        for start in range(0, len(entries), BATCH):
            pipe = conn.pipeline(transaction=False)
            for key, value, ttl in entries[start : start + BATCH]:
                pipe.set(key, value, ex=ttl or None)
            pipe.execute()
        return time.perf_counter() - started

    rebuild_once()  # warm-up: caches, connections, script load, SQLite page cache
    for start in range(0, len(entries), BATCH):
        chunk = entries[start : start + BATCH]
        stored = conn.mget([key for key, _, _ in chunk])
        assert stored == [value for _, value, _ in chunk], "the rebuild stored other bytes than the baseline writes"
    raw_set_once()
    recover_once()
    rebuild_times, raw_times, recover_times = [], [], []
    for _ in range(args.runs):  # interleaved, so that load on the machine weighs on each alike
        rebuild_times.append(rebuild_once())
        raw_times.append(raw_set_once())
        recover_times.append(recover_once())

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

    rebuild, raw, recover = (statistics.median(times) for times in (rebuild_times, raw_times, recover_times))
    n = args.tasks
    print(f"\nrecovery benchmark — engine {args.engine}, {n} live tasks, revision {git_revision()}")
    print(f"{'measure':<66} {'median':>8}  runs")

    def row(name: str, value: str, detail: str = "") -> None:
        print(f"{name:<66} {value:>8}  {detail}".rstrip())

    def runs(times: list[float]) -> str:
        return ", ".join(f"{t:.3f}" for t in times)

    row("mirror rebuild alone: reconcile_mirror() from an empty mirror", f"{rebuild:.3f}s", runs(rebuild_times))
    row("baseline: raw pipelined SET of the same keys and documents", f"{raw:.3f}s", runs(raw_times))
    row("ratio raw / rebuild (goal >= 0.5; 1.0 = as fast as a bare write)", f"{raw / rebuild:.2f}")
    row("recover: lease check + re-dispatch check + mirror rebuild", f"{recover:.3f}s", runs(recover_times))
    row("ratio raw / recover", f"{raw / recover:.2f}")
    per_task = expired_time / max(1, len(expired_ids)) * 1000
    expired = f"expired leases recovered ({len(expired_ids)}, interrupt + requeue)"
    row(expired, f"{expired_time:.3f}s", f"{per_task:.2f} ms/task")

    common = {"engine": args.engine, "size": n, "unit": "s"}
    record(
        section="recovery",
        measure="mirror rebuild from an empty mirror (ratio = raw SET / rebuild)",
        value=rebuild,
        ratio=raw / rebuild,
        goal="≤ 3 s and ratio ≥ 0.5",
        met=rebuild <= 3 and raw / rebuild >= 0.5,
        **common,
    )
    record(
        section="recovery", measure="baseline: raw pipelined SET of the same keys and documents", value=raw, **common
    )
    record(
        section="recovery",
        measure="recover: lease check + re-dispatch check + mirror rebuild (ratio = raw SET / recover)",
        value=recover,
        ratio=raw / recover,
        goal="≤ 3 s",
        met=recover <= 3,
        **common,
    )
    record(
        section="recovery",
        measure=f"expired leases recovered, interrupt + requeue ({per_task:.2f} ms/task)",
        engine=args.engine,
        size=len(expired_ids),
        value=expired_time,
        unit="s",
        goal="< 30 s (seed)",
        met=expired_time < 30,
    )


if __name__ == "__main__":
    main()
