"""Durable submit vs a bare Celery publish vs a raw two-insert transaction.

    python -m bench.submit --engine sqlite --count 200 --runs 3 --batch 100
    python -m bench.submit --engine postgres --count 200 --runs 3 --profile 25

Times, call by call, in one process, the loops interleaved run by run:

- durable: ``tasks.services.submit_task`` (validation and redaction, one
  committed transaction with the task row and its hash-chained history row,
  then on commit the Redis mirror write and the Celery publish);
- bare Celery: ``.delay()`` of the same submission (title, handler, payload) to
  a no-op task on the same Celery app and broker; publish only, no worker;
- raw SQL: the two INSERTs the service makes (a task row and a history row with
  the values it wrote, into copies of the real tables with their indexes),
  committed per iteration: stdlib ``sqlite3`` on a file of its own in WAL mode
  with ``synchronous=FULL``, or with ``--engine postgres`` psycopg on tables
  created ``LIKE`` the real ones (the server's fsync and synchronous_commit on).

- floor: the raw SQL loop's commit and then the bare Celery publish, one after the other: the least any
  durable submit does (its rows committed, then its message sent). Its ratio to bare Celery is the most a
  durable submit can reach on this machine and engine: where it is under 0.40, that goal is out of reach.

- floor with Redis: the floor's commit, then the Redis calls a durable submit makes after commit, through the
  service's own functions: the mirror write of the task's entry (``mirror.refresh_all``) and the publish with
  its receipt (``dispatch.publish_all``). What a durable submit costs beyond it is the CPU of its checks, rows
  and audit link.

- guarded floor: the floor with Redis, after the two things no durable submit may skip and which the floors above
  leave out: the submission checked as every door checks one (``services.checked_submission``: the project's rule that
  bad input gets a 4xx naming its fields, never a write) and its history row's link computed (``audit.row_hash``: the
  keyed chain the audit's guarantees rest on). Its ratio to bare Celery bounds a submit that keeps those guarantees
  (through these functions), as the drain's guarded floor bounds a worker: where it is under 0.40 in every run, the goal
  is out of reach for such a submit on this machine. What a durable submit costs beyond it is its ORM rows, its
  transaction and its audit context.

- durable batch: ``tasks.services.submit_batch`` of ``--batch`` tasks per call
  (the same submissions: one transaction with every task row and history row,
  then the mirror writes and the publishes, each in one round trip); its rate
  counts tasks, its latencies are per call.

Goals, ratios of throughputs within the same run: durable / bare Celery >= 0.40,
durable / raw SQL >= 0.30, durable batch (tasks/s) / bare Celery >= 1.0. The
queue, its messages and the mirror keys carry a token of the run and are
deleted afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from bench.dataset import ROOT, configure, git_revision
from bench.redis_keys import delete_keys
from bench.report import record, summary

BROKER_URL = "redis://127.0.0.1:6379/12"
PAYLOAD = {"message": "hello from the submit benchmark", "max_iterations": 3}
DURABLE = "durable: services.submit_task"
BATCH = "durable batch: services.submit_batch"
CELERY = "baseline: bare Celery .delay(), same payload"
FLOOR = "floor: the raw commit, then the bare .delay()"
GUARDED = "floor with Redis: raw commit, mirror write, publish"
CHECKED = "guarded floor: the same after the checks and the MAC"
# Each floor: what its ratio to a bare .delay() is (recorded), whether that ratio bounds the goal (the floor with
# Redis leaves out the checks, so it does not), what the durable submit's ratio to it names it, and the two ratios'
# labels as printed.
FLOORS = {
    FLOOR: (
        "floor / bare .delay(), the most a submit can reach",
        True,
        "floor",
        ("floor / bare .delay() (the most reachable)", "durable / floor"),
    ),
    GUARDED: ("this / bare .delay()", False, "floor with Redis", ("this / bare .delay()", "durable / this")),
    CHECKED: (
        "this / bare .delay(), the most a submit that keeps the checks and the chain can reach",
        True,
        "guarded floor",
        ("this / bare .delay() (the guarantees' bound)", "durable / this"),
    ),
}


@dataclass
class Series:
    """Every call's latency (seconds, all runs pooled) and each run's throughput (calls/s)."""

    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def timed_loop(call: Callable[[int], Any], count: int, series: Series, per_call: int = 1) -> None:
    """``count`` tasks in calls of ``per_call`` tasks, each call timed, and the loop's throughput in tasks over its
    wall time."""
    latencies = []
    started = time.perf_counter()
    for i in range(count // per_call):
        begin = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - begin)
    series.rates.append(count // per_call * per_call / (time.perf_counter() - started))
    series.latencies.extend(latencies)


class RawInserts:
    """The service's two INSERTs, as plain DB-API calls in one transaction each.

    The rows are the ones the service wrote for a real submission (read back
    from the database as stored), with a new task id per iteration so the
    primary key and unique indexes do the same work.
    """

    def __init__(self, conn: Any, marker: str, tables: tuple[str, str], rows: tuple[dict, dict], new_id: Callable):
        self.conn, self.new_id = conn, new_id
        task, history = rows
        history = {k: v for k, v in history.items() if k != "id"}  # the database numbers history rows
        self.task_sql = self._insert(tables[0], task, marker)
        self.history_sql = self._insert(tables[1], history, marker)
        self.task = list(task.values())
        self.history = list(history.values())
        self.task_slot = list(task).index("id")
        self.history_slot = list(history).index("task_id")

    @staticmethod
    def _insert(table: str, row: dict, marker: str) -> str:
        return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join([marker] * len(row))})"

    def __call__(self, _: int) -> None:
        task_id = self.new_id()
        task, history = self.task.copy(), self.history.copy()
        task[self.task_slot] = history[self.history_slot] = task_id
        self.begin()
        self.conn.execute(self.task_sql, task)
        self.conn.execute(self.history_sql, history)
        self.conn.commit()

    def begin(self) -> None:
        """SQLite: take the write lock at BEGIN, as the application's connections do; psycopg begins implicitly."""


class RawSqlite(RawInserts):
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")


def written_rows(cursor: Any, tables: tuple[str, str]) -> tuple[dict, dict]:
    """The newest task row and its history row as the database stores them (column name -> stored value)."""
    cursor.execute(f"SELECT * FROM {tables[0]} ORDER BY created_at DESC LIMIT 1")
    task = dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))
    cursor.execute(f"SELECT * FROM {tables[1]} WHERE task_id = %s", [task["id"]])
    history = dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))
    return task, history


def raw_sqlite(connection: Any, tables: tuple[str, str]) -> tuple[RawInserts, Callable[[], None]]:
    """A file of its own with the real tables' and indexes' CREATE statements (foreign keys not enforced)."""
    import sqlite3
    from pathlib import Path

    with connection.cursor() as cursor:
        rows = written_rows(cursor, tables)
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN (%s, %s) AND type IN ('table', 'index') "
            "AND sql IS NOT NULL ORDER BY type = 'index'",
            list(tables),
        )
        schema = [sql for (sql,) in cursor.fetchall()]
    path = ROOT / "var" / "bench" / "crux_bench_submit_raw.sqlite3"
    paths = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    for p in paths:
        p.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for sql in schema:
        conn.execute(sql)

    def close() -> None:
        conn.close()
        for p in paths:
            p.unlink(missing_ok=True)

    return RawSqlite(conn, "?", tables, rows, lambda: uuid.uuid4().hex), close


def raw_postgres(url: str, tables: tuple[str, str], json_columns: set[str]) -> tuple[RawInserts, Callable[[], None]]:
    """Tables ``LIKE`` the real ones (columns, defaults, indexes; no foreign keys or triggers) in a schema of their
    own. Rows are read with psycopg's own loaders (Django's load JSON as text); JSON goes as Jsonb, as Django sends it.
    """
    import psycopg
    from psycopg.types.json import Jsonb

    conn = psycopg.connect(url)
    rows = written_rows(conn.cursor(), tables)
    schema = f"bench_raw_{os.getpid()}"
    conn.execute(f"CREATE SCHEMA {schema}")
    for table in tables:
        conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
    conn.commit()
    rows = cast(
        "tuple[dict, dict]",  # two rows read, two converted
        tuple({k: Jsonb(v) if k in json_columns and v is not None else v for k, v in r.items()} for r in rows),
    )

    def close() -> None:
        conn.rollback()
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.commit()
        conn.close()

    qualified = (f"{schema}.{tables[0]}", f"{schema}.{tables[1]}")
    return RawInserts(conn, "%s", qualified, rows, uuid.uuid4), close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--count", type=int, default=200, help="calls per loop and run (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs; medians reported (default 3)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls of each loop first (default 30)")
    parser.add_argument("--batch", type=int, default=100, help="tasks per batch submit (default 100)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile --count durable submits and print the top N entries")  # fmt: skip
    args = parser.parse_args()

    token = f"crux-bench-submit-{os.getpid()}"
    os.environ["CELERY_BROKER_URL"] = BROKER_URL
    os.environ["REDIS_KEY_PREFIX"] = token
    url = configure(args.engine, "crux_bench_submit", fresh=True)
    import redis
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from crux.celery import app
    from persistence import dispatch, mirror
    from tasks import dispatch as publishing
    from tasks import services
    from tasks.audit import GENESIS_HASH, HASHED_FIELDS, Channel, row_hash
    from tasks.ids import celery_id
    from tasks.models import Task, TaskHistory
    from tasks.states import TaskState

    queue = f"{token}.celery"
    app.conf.task_default_queue = queue  # only this run's messages there, and no worker listens

    def noop(**submission: Any) -> None:
        """Never runs (no worker consumes the queue): only its publish is timed."""

    bare = app.task(name="bench.submit.noop", ignore_result=True)(noop)
    user = get_user_model().objects.create_user("bench-submit")

    def submission(i: int) -> dict[str, Any]:
        """The ``i``-th call's submission, the same for every loop."""
        return {"title": f"bench submit {i}", "handler": "echo", "request_payload": PAYLOAD}

    def durable(i: int) -> None:
        services.submit_task(owner=user, actor=user, channel=Channel.API, **submission(i))

    def batch(i: int) -> None:
        services.submit_batch(
            owner=user, actor=user, channel=Channel.API,
            items=[{"title": f"bench batch {i}.{j}", "handler": "echo", "request_payload": PAYLOAD}
                   for j in range(args.batch)],
        )  # fmt: skip

    def delay(i: int) -> None:
        bare.delay(**submission(i))

    broker = redis.Redis.from_url(BROKER_URL)
    tables = (Task._meta.db_table, TaskHistory._meta.db_table)
    with ExitStack() as cleanup:
        cleanup.callback(delete_keys, mirror.client(), token)
        cleanup.callback(delete_keys, broker, token)
        for i in range(args.warmup):
            durable(i)
        if args.engine == "sqlite":
            raw, close_raw = raw_sqlite(connection, tables)
            raw_label = "baseline: raw sqlite3, 2 INSERTs/commit, WAL, sync=FULL"
        else:
            json_columns = {
                cast(str, f.column) for m in (Task, TaskHistory) for f in m._meta.concrete_fields
                if f.get_internal_type() == "JSONField"
            }  # fmt: skip
            raw, close_raw = raw_postgres(url, tables, json_columns)
            raw_label = "baseline: raw psycopg, 2 INSERTs/commit"
        cleanup.callback(close_raw)

        def floor(i: int) -> None:
            raw(i)
            delay(i)

        entry = mirror.snapshot_of(Task.objects.order_by("-created_at").first())

        def guarded(i: int) -> None:
            raw(i)
            task_id = uuid.uuid4()
            mirror.refresh_all([{**entry, "id": str(task_id)}])
            publishing.publish_all([publishing.Publish(task_id, celery_id(task_id, 1), "", 5)])

        history = TaskHistory.objects.filter(task_id=entry["id"]).values(*HASHED_FIELDS).get()

        def checked(i: int) -> None:
            services.checked_submission(user, submission(i), state=TaskState.QUEUED)
            row_hash(GENESIS_HASH, {**history, "task_id": uuid.uuid4(), "created_at": timezone.now()})
            guarded(i)

        loops: dict[str, Callable[[int], object]] = {
            DURABLE: durable,
            BATCH: batch,
            CELERY: delay,
            raw_label: raw,
            FLOOR: floor,
            GUARDED: guarded,
            CHECKED: checked,
        }
        per_call = {BATCH: args.batch}
        goals = {CELERY: 0.40, raw_label: 0.30}
        for name, call in loops.items():
            if name != DURABLE:
                for i in range(max(args.warmup // per_call.get(name, 1), 1)):
                    call(i)
        results = {name: Series() for name in loops}
        names = list(loops)
        for run in range(args.runs):  # rotate the order, so no loop always runs first or last
            for name in names[run % len(names) :] + names[: run % len(names)]:
                timed_loop(loops[name], args.count, results[name], per_call.get(name, 1))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [loops[DURABLE](i) for i in range(args.count)])
        published = dispatch.queued_count(broker, queue)

    batches = max(args.warmup // args.batch, 1) + args.runs * (args.count // args.batch)
    expected = 5 * (args.warmup + args.runs * args.count) + batches * args.batch + (args.count if args.profile else 0)
    if published != expected:
        raise SystemExit(f"{published} messages were published, not {expected}: a publish failed")

    print(
        f"\nsubmit benchmark — engine {args.engine}, {args.count} calls x {args.runs} interleaved runs "
        f"after {args.warmup} warm-ups, revision {git_revision()}"
    )
    print(f"{'loop':<56} {'calls/s':>8} {'(runs min-max)':>16} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for name, series in results.items():
        lat = summary([t * 1000 for t in series.latencies])
        rate = statistics.median(series.rates)
        spread = f"{min(series.rates):,.0f}-{max(series.rates):,.0f}"
        print(f"{name:<56} {rate:>8,.0f} {spread:>16} {lat['median']:>7.2f} {lat['p95']:>7.2f} {lat['p99']:>7.2f}")
        record("submit", f"{name}: per call", engine=args.engine, value=lat["median"], unit="ms",
               p95=lat["p95"], p99=lat["p99"], size=args.count)  # fmt: skip
        if name == DURABLE:
            record("submit", f"{name}: throughput", engine=args.engine, value=rate, unit="/s", size=args.count)
            continue
        if name == BATCH:
            record("submit", f"{name} of {args.batch}: throughput (tasks)", engine=args.engine, value=rate,
                   unit="/s", size=args.count)  # fmt: skip
            continue
        if name in FLOORS:
            reachable = [f / b for f, b in zip(series.rates, results[CELERY].rates, strict=True)]
            of_floor = [d / f for d, f in zip(results[DURABLE].rates, series.rates, strict=True)]
            bound, bounds_goal, floor_name, labels = FLOORS[name]
            reach = statistics.median(reachable)
            record("submit", f"{name}: throughput (ratio = {bound})", engine=args.engine, value=rate, unit="/s",
                   ratio=reach, goal=">= 0.40 (else the goal is out of reach)" if bounds_goal else "",
                   met=reach >= 0.40 if bounds_goal else None, size=args.count)  # fmt: skip
            record("submit", f"{DURABLE}: throughput (ratio = durable / {floor_name})", engine=args.engine,
                   value=statistics.median(results[DURABLE].rates), unit="/s", ratio=statistics.median(of_floor),
                   size=args.count)  # fmt: skip
            for label, ratios in zip(labels, (reachable, of_floor), strict=True):
                print(
                    f"{'  ratio ' + label:<56} {statistics.median(ratios):>8.2f} "
                    f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>16}"
                )
            continue
        # One ratio per run (the loops of a run ran back to back), the median of them reported.
        ratios = [d / b for d, b in zip(results[DURABLE].rates, series.rates, strict=True)]
        ratio, goal = statistics.median(ratios), goals[name]
        record("submit", f"{name}: throughput (ratio = durable / this)", engine=args.engine, value=rate, unit="/s",
               ratio=ratio, goal=f">= {goal:.2f}", met=ratio >= goal, size=args.count)  # fmt: skip
        print(
            f"{'  ratio durable / this (goal >= ' + f'{goal:.2f})':<56} {ratio:>8.2f} "
            f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>16}"
        )
        if name == CELERY:
            batch_ratios = [d / b for d, b in zip(results[BATCH].rates, series.rates, strict=True)]
            batch_ratio = statistics.median(batch_ratios)
            record("submit", f"{BATCH} of {args.batch}: tasks/s (ratio = batch / bare .delay())",
                   engine=args.engine, value=statistics.median(results[BATCH].rates), unit="/s", ratio=batch_ratio,
                   goal=">= 1.00", met=batch_ratio >= 1.0, size=args.count)  # fmt: skip
            print(
                f"{'  ratio batch (tasks/s) / this (goal >= 1.00)':<56} {batch_ratio:>8.2f} "
                f"{f'{min(batch_ratios):.2f}-{max(batch_ratios):.2f}':>16}"
            )
    if args.profile:
        print(f"\ncProfile of {args.count} durable submits (top {args.profile} by own time, then cumulative):")
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
