"""A bare Celery app with a no-op task, the baseline of the drain benchmark (``bench.drain``), and the floor task.

    celery -A bench.celery_noop worker -Q <queue> -c N   # started by bench.drain, never by the application

No Django, no result backend: what a bare Celery no-op drain is. The floor task (``bench.floor``) adds only the
durable writes an attempt cannot do without, in raw SQL on the benchmark's database (``BENCH_FLOOR_URL``): two
commits, as Crux's worker makes for an echo task (the claim with its history row; the outcome with the handler's
output and its history and metrics rows), each one synced to disk (SQLite in WAL mode with ``synchronous=FULL``,
writers taking the database's write lock in turn as Crux's do; PostgreSQL's default ``synchronous_commit``). What it
drains is the most any worker doing those commits can drain here: the ceiling of the durable design, measured.
Delivery is configured as Crux's workers are (late acks, prefetch multiplier 1,
JSON), so both drains take messages from the broker the same way. Each run of
the task appends the time it ran to the Redis list ``BENCH_NOOP_KEY``: the
drain is over when the list holds one entry per message published.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from typing import Any

import redis
from celery import Celery

# Not the current app: in the benchmark process, the application's shared tasks must keep binding to Crux's app.
app = Celery("bench_noop", broker=os.environ.get("CELERY_BROKER_URL"), set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
_client: redis.Redis | None = None
FLOOR_TABLES = [
    "CREATE TABLE IF NOT EXISTS bench_floor_task (id varchar(36) PRIMARY KEY, state varchar(16) NOT NULL, "
    "worker varchar(64), started_at double precision, finished_at double precision, result text)",
    "CREATE TABLE IF NOT EXISTS bench_floor_history (task_id varchar(36) NOT NULL, seq integer NOT NULL, "
    "state varchar(16) NOT NULL, actor varchar(64) NOT NULL, at double precision NOT NULL, mac varchar(64) NOT NULL, "
    "PRIMARY KEY (task_id, seq))",
    "CREATE TABLE IF NOT EXISTS bench_floor_output (task_id varchar(36) NOT NULL, at double precision NOT NULL, "
    "content text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bench_floor_output_task ON bench_floor_output (task_id)",
    "CREATE TABLE IF NOT EXISTS bench_floor_metrics (task_id varchar(36) PRIMARY KEY, seconds double precision)",
]
_floor: Any = None


def _record_run() -> None:
    """Append when this run happened to the Redis list ``BENCH_NOOP_KEY`` (one round trip)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    _client.rpush(os.environ["BENCH_NOOP_KEY"], time.time())


@app.task(name="bench.noop")
def noop(**submission: Any) -> None:
    """Do nothing but record when it ran, so the drain can be timed from outside."""
    _record_run()


class _FloorDatabase:
    """One connection to the benchmark's database; ``commit(statements)`` runs them in one durable transaction."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite:///")
        if self.sqlite:
            path = url.removeprefix("sqlite:///")
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.lock = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o644)  # Crux's writers queue on it
        else:
            import psycopg

            self.conn = psycopg.connect(url)

    def commit(self, statements: list[tuple[str, tuple]]) -> None:
        if self.sqlite:
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self.conn.execute(sql.replace("%s", "?"), params)
                self.conn.execute("COMMIT")
            finally:
                fcntl.flock(self.lock, fcntl.LOCK_UN)
        else:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                for sql, params in statements:
                    cursor.execute(sql, params)


@app.task(name="bench.floor")
def floor(task_id: str) -> None:
    """An attempt's durable writes and nothing else: two commits, then the run is recorded like a no-op's."""
    global _floor
    if _floor is None:
        _floor = _FloorDatabase(os.environ["BENCH_FLOOR_URL"])
    worker, mac = f"floor@{os.getpid()}", "0" * 64
    started = time.time()
    _floor.commit([
        ("UPDATE bench_floor_task SET state = 'running', worker = %s, started_at = %s WHERE id = %s "
         "AND state = 'queued'", (worker, started, task_id)),
        ("INSERT INTO bench_floor_history VALUES (%s, 2, 'running', %s, %s, %s)", (task_id, worker, started, mac)),
    ])  # fmt: skip
    finished = time.time()
    _floor.commit([
        ("INSERT INTO bench_floor_output VALUES (%s, %s, %s)", (task_id, finished, "drain")),
        ("UPDATE bench_floor_task SET state = 'completed', finished_at = %s, result = %s WHERE id = %s "
         "AND state = 'running' AND worker = %s", (finished, '{"echo": "drain"}', task_id, worker)),
        ("INSERT INTO bench_floor_history VALUES (%s, 3, 'completed', %s, %s, %s)", (task_id, worker, finished, mac)),
        ("INSERT INTO bench_floor_metrics VALUES (%s, %s)", (task_id, finished - started)),
    ])  # fmt: skip
    _record_run()
