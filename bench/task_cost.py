"""What one echo task costs a worker: commits, SQL statements by kind, threads started, wall and CPU time.

    python -m bench.task_cost --engine sqlite --tasks 300
    python -m bench.task_cost --engine postgres --tasks 300 --profile 40
    python -m bench.task_cost --engine sqlite --tasks 100 --handler agent_demo

``--handler agent_demo`` runs the simulated agent instead (``AGENT_PAYLOAD``: five iterations, each a progress
write and a log line, then an artifact, its metrics and the outcome), with no sleep: what a handler that reports as
it goes costs, its outputs written with its next write (``TASK_OUTPUT_FLUSH_SECONDS``; 0 writes each at once).

Each task is run through Celery's own tracer (``bench.traced``: the code a worker's pool process runs for a
delivery: prerun, the task, its result, postrun), in this process, with no broker round trip, so only the work
of the task itself is counted: the claim, the handler's output, the outcome with its metrics, the history rows, the
mirror writes after each commit. Commits are counted on the connection, statements with
``connection.execute_wrapper``, threads at ``Thread.start``, and on SQLite the time the database's write lock is
held (from a transaction's first statement to its commit: what every other writer, a second worker process say,
waits for); with ``--profile N``, cProfile's top N entries by cumulative time. The broker queue and mirror keys
carry a token of the run and are deleted afterwards.

It also measures what the drained tasks take in the database, as ``bench.scale``'s storage does (after a VACUUM):
the growth of the tables that hold a row or more per task (``TASK_TABLES``: the task, its history, outputs, search
index and Celery's result rows, of deliveries that do not complete) and of their indexes from before the tasks were
submitted to after they were drained, divided by their number: the real writer's rows, as ``bench.scale``'s
storage data set holds them (``bench.written``), for a task of this handler.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.dataset import git_revision
from bench.report import record
from bench.traced import traced_worker

HANDLERS = {
    "echo": {"message": "x"},
    "agent_demo": {"max_iterations": 5, "converge_after": 5, "delay": 0},
}
# Tables with a row (or more) per drained task; everything else in the database is the same whatever the tasks.
TASK_TABLES = (
    "tasks_task",
    "tasks_taskhistory",
    "tasks_taskoutput",
    "tasks_task_search",
    "django_celery_results_taskresult",
)


class Counts:
    """Commits (a transaction's, and each write made outside one, which commits on its own), statements by kind,
    thread starts and (SQLite) the time the write lock is held while a block runs in this process."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.commits = self.autocommit_writes = self.threads = 0
        self.statements: Counter[str] = Counter()
        self.lock_held = 0.0  # seconds, from the write lock's taking (a transaction's first statement) to its release
        # Per turn of the lock (a transaction, or a write outside one): (seconds held, seconds from its taking to the
        # first write statement).
        self.held: list[tuple[float, float]] = []
        self._lock_taken: float | None = None
        self._first_write: float | None = None
        self._writing = False  # a write statement is about to run: the lock, if it takes it now, is taken for it

    def statement(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = sql.split(None, 1)[0].upper()
        self.statements[kind] += 1
        self._writing = kind in ("INSERT", "UPDATE", "DELETE")
        if self._writing:
            if self._lock_taken is not None and self._first_write is None:
                self._first_write = time.perf_counter() - self._lock_taken
            if not self.connection.in_atomic_block:
                self.autocommit_writes += 1
                self.commits += 1
        try:
            return execute(sql, params, many, context)
        finally:
            self._writing = False

    def __enter__(self) -> Counts:
        real_commit, real_start = self.connection.commit, threading.Thread.start

        def commit() -> None:
            self.commits += 1
            real_commit()

        counts = self

        def start(self: threading.Thread) -> None:  # named as the method it stands in for
            counts.threads += 1
            real_start(self)

        self.restore = (real_commit, real_start)
        self.connection.commit = commit
        threading.Thread.start = start  # type: ignore[method-assign]
        if hasattr(self.connection, "_acquire_write_lock"):  # crux.db's SQLite: the lock every writer waits for
            self._time_write_lock()
        self.wrapper = self.connection.execute_wrapper(self.statement)
        self.wrapper.__enter__()
        return self

    def _time_write_lock(self) -> None:
        acquire, release = self.connection._acquire_write_lock, self.connection._release_write_lock

        def acquire_timed() -> None:
            acquire()
            self._lock_taken = time.perf_counter()
            if self._writing:  # taken by a write statement (a transaction's first, or one outside any)
                self._first_write = 0.0

        def release_timed() -> None:
            if self._lock_taken is not None:
                held = time.perf_counter() - self._lock_taken
                self.lock_held += held
                self.held.append((held, held if self._first_write is None else self._first_write))
                self._lock_taken = self._first_write = None
            release()

        self.connection._acquire_write_lock, self.connection._release_write_lock = acquire_timed, release_timed

    def __exit__(self, *exc: object) -> None:
        self.wrapper.__exit__(*exc)
        self.connection.commit, threading.Thread.start = self.restore  # type: ignore[method-assign]  # put back
        self.connection.__dict__.pop("_acquire_write_lock", None)
        self.connection.__dict__.pop("_release_write_lock", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N entries")
    parser.add_argument("--handler", choices=list(HANDLERS), default="echo", help="what each task runs (default echo)")
    args = parser.parse_args()

    with traced_worker(args.engine, "crux_bench_task_cost", hostname="w@task-cost", name="task-cost") as run:
        measure(args, run)


def measure(args: argparse.Namespace, run: Callable[[list], None]) -> None:
    """Submit the tasks, run them through the tracer while counting, and print what was counted."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tasks import services
    from tasks.audit import Channel
    from tasks.models import Task

    user = get_user_model().objects.create_user(f"task-cost-{os.getpid()}")

    def submitted(count: int) -> list[Task]:
        ids = [
            services.submit_task(
                owner=user, actor=user, channel=Channel.API, title=f"cost {i}", handler=args.handler,
                request_payload=HANDLERS[args.handler],
            ).pk
            for i in range(count)
        ]  # fmt: skip
        return list(Task.objects.filter(pk__in=ids))

    run(submitted(10))  # warm-up
    empty = table_bytes(connection)
    tasks = submitted(args.tasks)
    profiler = cProfile.Profile() if args.profile else None
    with Counts(connection) as counts:
        began, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        run(tasks)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    states = Counter(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("state", flat=True))

    n = args.tasks
    print(
        f"\ntask cost — engine {args.engine}, {n} {args.handler} tasks through Celery's tracer (outputs written "
        f"after {settings.TASK_OUTPUT_FLUSH_SECONDS:g} s at most), revision {git_revision()}"
    )
    print(f"states after: {dict(states)}")
    figures = {
        "wall ms": wall / n * 1000,
        "CPU ms": cpu / n * 1000,
        "durable commits": counts.commits / n,
        "SQL statements": sum(counts.statements.values()) / n,
        "threads started": counts.threads / n,
    }
    if connection.vendor == "sqlite":
        figures["write lock held ms"] = counts.lock_held / n * 1000
    for name, value in figures.items():
        print(f"  {name + ' per task':<28} {value:>8.2f}")
        record("task_cost", f"{name} per {args.handler} task", engine=args.engine, value=value, unit="", size=n)
    print(
        "  statements by kind: " + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.statements.items()))
        + f"; writes outside a transaction (each a commit of its own) {counts.autocommit_writes / n:.2f}"
    )  # fmt: skip
    if counts.held:
        held, before_write = (statistics.median(column) * 1000 for column in zip(*counts.held, strict=True))
        print(
            f"  write lock held per turn, median {held:.2f} ms, of which {before_write:.2f} ms before its first "
            f"write ({len(counts.held) / n:.0f} turns a task: transactions and writes outside one)"
        )
    grown = table_bytes(connection)
    grown.subtract(empty)
    print(f"  bytes per drained task (its tables and their indexes, after a VACUUM): {grown.total() / n:,.0f}")
    for (name, kind), size in grown.most_common():
        if size / n >= 1:
            print(f"    {name:<52} {kind:<12} {size / n:>8,.0f}")
    record(
        "task_cost", f"bytes per drained {args.handler} task", engine=args.engine, value=grown.total() / n, unit="B",
        size=n,
    )  # fmt: skip
    if profiler:
        pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(args.profile)


def table_bytes(connection: Any) -> Counter[tuple[str, str]]:
    """Bytes of each component (name, kind) of the TASK_TABLES and their indexes, after a VACUUM."""
    from bench.scale import storage_components

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("VACUUM")
        components, _ = storage_components(cursor, connection.vendor)
    return Counter({(name, kind): size for table, name, kind, size in components if table in TASK_TABLES})


if __name__ == "__main__":
    main()
