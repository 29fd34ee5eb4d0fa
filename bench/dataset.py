"""Build large, realistic task data sets fast, for benchmarks only.

    python -m bench.dataset --tasks 100000 --engine sqlite   # times a fresh build

Tasks are inserted in bulk with their complete, correctly chained history (so
``verify_audit`` passes on them), a few outputs and metrics. This deliberately
goes around the one-task-at-a-time service door, which is what a benchmark
fixture needs and what the application never does.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import accumulate, chain
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIFECYCLES: dict[str, list[str]] = {
    "pending": ["pending"],
    "queued": ["pending", "queued"],
    "running": ["pending", "queued", "running"],
    "completed": ["pending", "queued", "running", "completed"],
    "failed": ["pending", "queued", "running", "failed"],
    "cancelled": ["pending", "queued", "cancelled"],
    "interrupted": ["pending", "queued", "running", "interrupted"],
}
ROLES = ["backend", "frontend", "devops", "research", "qa"]
PROVIDERS = ["claude", "openai", "gemini", "local"]
WORDS = "login cache billing search export import report parser retry queue index upload audit".split()


def configure(engine: str, name: str, *, fresh: bool = True) -> str:
    """Point Django at a benchmark database of ``engine`` (emptied unless ``fresh`` is False)."""
    if engine == "sqlite":
        path = ROOT / "var" / "bench" / f"{name}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    elif engine == "postgres":
        import psycopg

        base = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if fresh or not exists:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
    else:
        raise SystemExit(f"unknown engine {engine!r}: use sqlite or postgres")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
    os.environ.setdefault("REDIS_KEY_PREFIX", f"crux-bench-{os.getpid()}")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


REALISTIC_MIX = {"completed": 0.7, "failed": 0.1, "cancelled": 0.05, "queued": 0.08, "running": 0.05, "pending": 0.02}


def ensure(count: int, mix: dict[str, float] = REALISTIC_MIX) -> None:
    """Build the data set unless this database already holds it (tasks plus those purged since)."""
    from retention.models import PurgeLedger
    from tasks.models import Task

    existing = Task.objects.count() + PurgeLedger.objects.count()
    if existing == count:
        return
    if existing:
        raise SystemExit(f"the benchmark database holds {existing} tasks, not {count}: run with --fresh")
    build(count, mix)


def build(count: int, mix: dict[str, float], *, seed: int = 1, batch_size: int = 2000, outputs: int = 2) -> None:
    """Insert ``count`` tasks whose states follow ``mix`` (weights), with history, outputs and metrics.

    Rows are plain dicts turned into tuples of database values (``_Table``) and
    written with the DB-API cursor's ``executemany``, one transaction per batch:
    no model instances, no ORM insert compiler. The content is what
    ``bulk_create`` of the equivalent model instances writes (defaults of unset
    fields, ``auto_now`` stamps, the hash chain of ``tasks.audit.row_hash``).
    """
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone
    from tqdm import tqdm

    from tasks.models import Task, TaskHistory, TaskMetrics, TaskOutput

    rng = random.Random(seed)
    users = [
        (user.pk, user.username)
        for user in (get_user_model().objects.get_or_create(username=f"bench{i}")[0] for i in range(5))
    ]
    states, weights = zip(*mix.items(), strict=True)
    cum_weights = list(accumulate(weights))  # what rng.choices(states, weights) computes on every call
    tables = [_Table(connection, model) for model in (Task, TaskHistory, TaskOutput, TaskMetrics)]
    task_table, history_table, output_table, metrics_table = tables
    now = timezone.now()
    with tqdm(total=count, unit="task", desc="building", file=sys.stderr) as bar, _bulk_load(connection):
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            stamp = timezone.now()  # the auto_now ``updated_at`` that bulk_create's pre_save would set
            tasks, rows, outs, metrics = [], [], [], []
            for _ in range(size):
                state = rng.choices(states, cum_weights=cum_weights)[0]
                task, history = _task(rng, state, rng.choice(users), now)
                created_output_at = task["updated_at"]
                task["updated_at"] = stamp
                tasks.append(task_table.row(task))
                rows.extend(map(history_table.row, history))
                if state in ("completed", "failed"):
                    outs.extend(output_table.row(o) for o in _outputs(rng, task["id"], created_output_at, outputs))
                if state == "completed":
                    metrics.append(metrics_table.row(_metrics(rng, task["id"], stamp)))
            with transaction.atomic():
                cursor = _raw_cursor(connection)
                try:
                    for table, values in zip(tables, (tasks, rows, outs, metrics), strict=True):
                        table.insert(cursor, values)
                finally:
                    cursor.close()
            bar.update(size)


@contextmanager
def _bulk_load(connection) -> Iterator[None]:
    """On SQLite, a large page cache while loading (the random-key indexes outgrow the default 2 MiB), then
    the connection's own setting back, so what is measured afterwards runs as it always did."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
        cursor.execute("PRAGMA cache_size = -262144")  # KiB: 256 MiB
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(previous)}")


def _raw_cursor(connection):
    """The DB-API cursor of Django's connection (so inside its transaction).

    On PostgreSQL a server-side-binding cursor: executemany then runs in
    pipeline mode with a prepared statement and binary parameters, instead of
    Django's client-side-binding cursor quoting every value into the SQL text.
    """
    if connection.vendor == "postgresql":
        import psycopg

        return psycopg.Cursor(connection.connection)
    return connection.connection.cursor()


class _Table:
    """The INSERT statement of a model and the conversion of a row dict (by attname) to its parameters.

    Columns are the model's concrete fields, less an auto-increment primary key
    (the database numbers those rows, in insertion order as bulk_create did).
    Unset fields take the field's default, adapted once. Values are adapted the
    way Django's fields adapt them for the vendor: on SQLite UUIDs as 32-char
    hex, datetimes as Django's strings, JSON as text, booleans as 0/1; on
    PostgreSQL UUIDs and aware datetimes as they are, JSON wrapped in Jsonb.
    Rows go ``ROWS_PER_STATEMENT`` to an INSERT (fewer if the vendor's parameter
    limit says so), which saves most of PostgreSQL's per-statement cost.
    """

    ROWS_PER_STATEMENT = 100

    def __init__(self, connection, model) -> None:
        from django.db.models.fields import AutoFieldMixin

        fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoFieldMixin)]
        quote = connection.ops.quote_name
        marker = "?" if connection.vendor == "sqlite" else "%s"
        self.head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) VALUES "
        self.one = f"({', '.join([marker] * len(fields))})"
        limit = connection.features.max_query_params or 65535
        self.per_statement = max(1, min(self.ROWS_PER_STATEMENT, limit // len(fields)))
        self.slots: dict[str, tuple[int, object]] = {}
        self.template: list = []
        for index, field in enumerate(fields):
            adapt = _adapter(connection, field)
            self.slots[field.attname] = (index, adapt)
            default = None if getattr(field, "auto_now", False) else field.get_default()
            self.template.append(default if default is None or adapt is None else adapt(default))

    def sql(self, rows: int) -> str:
        return self.head + ", ".join([self.one] * rows)

    def insert(self, cursor, rows: list[tuple]) -> None:
        """executemany of a multi-row INSERT over groups of ``per_statement`` rows, then the rest."""
        per = self.per_statement
        full = len(rows) - len(rows) % per
        if full:
            groups = [tuple(chain.from_iterable(rows[i : i + per])) for i in range(0, full, per)]
            cursor.executemany(self.sql(per), groups)
        if full < len(rows):
            cursor.executemany(self.sql(len(rows) - full), [tuple(chain.from_iterable(rows[full:]))])

    def row(self, values: dict) -> tuple:
        out = self.template.copy()
        slots = self.slots
        for name, value in values.items():
            index, adapt = slots[name]
            out[index] = value if value is None or adapt is None else adapt(value)
        return tuple(out)


def _adapter(connection, field):
    """The function turning a Python value of ``field`` into its parameter (None: passes as it is)."""
    kind = (field.target_field if field.is_relation else field).get_internal_type()
    if connection.vendor == "postgresql":
        if kind == "JSONField":
            from psycopg.types.json import Jsonb

            return Jsonb
        return None
    if connection.vendor != "sqlite":
        raise SystemExit(f"the data-set builder supports sqlite and postgresql, not {connection.vendor}")
    if kind == "UUIDField":
        return lambda value: value.hex
    if kind == "DateTimeField":
        return connection.ops.adapt_datetimefield_value
    if kind == "JSONField":
        return json.dumps
    if kind == "BooleanField":
        return int
    return None


def _task(rng: random.Random, state: str, owner: tuple[int, str], now: datetime) -> tuple[dict, list[dict]]:
    """One task and its hash-chained history, as dicts by attname (same draws from ``rng`` as ever)."""
    from tasks.audit import GENESIS_HASH, row_hash

    owner_id, owner_name = owner
    created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
    words = rng.sample(WORDS, 3)
    task_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    title = f"{words[0]} {words[1]} task"
    task = {
        "id": task_id,
        "title": title,
        "description": f"Make the {words[0]} {words[2]} flow work for {rng.choice(WORDS)} users.",
        "role": rng.choice(ROLES),
        "provider": rng.choice(PROVIDERS),
        "model": "model-x",
        "state": state,
        "owner_id": owner_id,
        "created_at": created,
        "request_payload": {"prompt": " ".join(words), "max_iterations": 3},
        "metadata": {"source": "bench"},
        "max_attempts": 3,
    }
    history = []
    prev = GENESIS_HASH
    at = created
    path = LIFECYCLES[state]
    for seq, step in enumerate(path, start=1):
        at = at + timedelta(seconds=rng.uniform(0.01, 30))
        first = seq == 1
        row = {
            "task_id": task_id,
            "seq": seq,
            "event": "created" if first else "transition",
            "state_from": "" if first else path[seq - 2],
            "state_to": step,
            "actor": owner_name if first else "system:worker",
            "actor_user_id": owner_id if first else None,
            "channel": "api" if first else "worker",
            "reason": "submitted" if first else f"moved to {step}",
            "error_message": "RuntimeError: bench failure" if step == "failed" else "",
            "details": {"changes": {"title": title, "state": step} if first else {"state": [path[seq - 2], step]}},
            "created_at": at,
        }
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(prev, row)
        history.append(row)
        if step == "running":
            task["started_at"] = at
            task["attempt_count"] = 1
            task["worker_id"] = "celery@bench:1"
            task["lease_expires_at"] = now + timedelta(hours=1)
        if step == "queued":
            # live queued tasks were just dispatched, so the re-dispatch sweep leaves them alone
            task["dispatched_at"], task["dispatch_count"] = (now if state == "queued" else at), 1
    if state in ("completed", "failed", "cancelled"):
        task["completed_at"] = at
        task["lease_expires_at"] = None
    if state == "completed":
        task["progress"] = 1.0
        task["result"] = {"answer": rng.getrandbits(64), "converged": True}
    if state == "failed":
        task["last_error"], task["error_count"] = "RuntimeError: bench failure", 1
    task["updated_at"] = at
    task["history_count"], task["history_head"] = len(history), prev
    return task, history


def _outputs(rng: random.Random, task_id: uuid.UUID, at: datetime, count: int) -> Iterator[dict]:
    for i in range(count):
        yield {
            "task_id": task_id,
            "output_type": "stdout" if i == 0 else "log",
            "content": f"step {i}: " + " ".join(rng.choices(WORDS, k=12)),
            "created_at": at,
        }


def _metrics(rng: random.Random, task_id: uuid.UUID, stamp: datetime) -> dict:
    prompt, completion = rng.randint(500, 9000), rng.randint(200, 6000)
    return {
        "task_id": task_id,
        "processing_time_seconds": rng.uniform(1, 300),
        "iterations": rng.randint(1, 5),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "stop_reason": "evaluator_stop",
        "converged": True,
        "updated_at": stamp,  # auto_now
    }


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Time a fresh build of the realistic data set.")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    configure(args.engine, f"crux_bench_build_{args.tasks}")
    started = time.perf_counter()
    build(args.tasks, REALISTIC_MIX)
    elapsed = time.perf_counter() - started
    print(
        f"\ndata-set build — engine {args.engine}, {args.tasks} tasks, revision {git_revision()}: "
        f"{elapsed:.1f} s, {args.tasks / elapsed:,.0f} tasks/s"
    )


if __name__ == "__main__":
    main()
