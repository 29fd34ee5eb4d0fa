"""A bare Celery app with a no-op task, the baseline of the drain benchmark (``bench.drain``), and the floor task.

    celery -A bench.celery_noop worker -Q <queue> -c N   # started by bench.drain, never by the application

No Django, no result backend: what a bare Celery no-op drain is. The floor task (``bench.floor``) adds only the
durable writes an attempt cannot do without, in raw SQL on the benchmark's database (``BENCH_FLOOR_URL``): two
commits, as Crux's worker makes for an echo task (the claim with its history row; the outcome with the handler's
output and its history and metrics rows), each one synced to disk (SQLite in WAL mode with ``synchronous=FULL``,
writers taking the database's write lock in turn as Crux's do; PostgreSQL's default ``synchronous_commit``). What it
drains is the most any worker doing those commits can drain here: the ceiling of the durable design, measured.
The guarded floor (``bench.guarded_floor``) makes the same two commits with what Crux's guarantees cost at the
least, in the same raw SQL: the task row read first (what a claim decides on, and the head its history chains from);
the claim and the outcome each a compare-and-set on the row's version (a duplicate or late one writes nothing and
stops the drain); each history row chained to the one before by HMAC-SHA256 over its JSON, the row's version and
chain head moved with it; and after each commit the task's mirror entry written to Redis by one compare-and-set
script (a late writer never replaces newer state). No ORM, validation, redaction, metrics or logging: what remains
of Crux's work. ``guarded floor / bare`` is the most a drain that keeps those guarantees can reach here.
Delivery is configured as Crux's workers are (late acks, prefetch multiplier 1,
JSON), so both drains take messages from the broker the same way. Each run of
the task appends the time it ran to the Redis list ``BENCH_NOOP_KEY``: the
drain is over when the list holds one entry per message published.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
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
    "DROP TABLE IF EXISTS bench_floor_task",  # a data set of an earlier revision of the benchmark had fewer columns
    "CREATE TABLE bench_floor_task (id varchar(36) PRIMARY KEY, state varchar(16) NOT NULL, "
    "worker varchar(64), started_at double precision, finished_at double precision, result text, "
    "version integer NOT NULL DEFAULT 1, head varchar(64) NOT NULL DEFAULT '')",
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
    _redis().rpush(os.environ["BENCH_NOOP_KEY"], time.time())


def _redis() -> redis.Redis:
    """This process's connection to the benchmark's Redis (the broker's database), opened on first use."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    return _client


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
            # A sqlite3 connection, else a psycopg one (``self.sqlite``): each method branches on which.
            self.conn: Any = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.lock = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o644)  # Crux's writers queue on it
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)  # a read is a statement; a commit, a transaction

    def read(self, sql: str, params: tuple) -> tuple | None:
        """One row, read outside any transaction (as Crux's services read a task before a compare-and-set)."""
        if self.sqlite:
            return self.conn.execute(sql.replace("%s", "?"), params).fetchone()
        return self.conn.execute(sql, params).fetchone()

    def commit(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """The statements in one durable transaction; the rows each changed."""
        changed = []
        if self.sqlite:
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    changed.append(self.conn.execute(sql.replace("%s", "?"), params).rowcount)
                self.conn.execute("COMMIT")
            finally:
                fcntl.flock(self.lock, fcntl.LOCK_UN)
        else:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                for sql, params in statements:
                    cursor.execute(sql, params)
                    changed.append(cursor.rowcount)
        return changed


def _floor_database() -> _FloorDatabase:
    global _floor
    if _floor is None:
        _floor = _FloorDatabase(os.environ["BENCH_FLOOR_URL"])
    return _floor


@app.task(name="bench.floor")
def floor(task_id: str) -> None:
    """An attempt's durable writes and nothing else: two commits, then the run is recorded like a no-op's."""
    database = _floor_database()
    worker, mac = f"floor@{os.getpid()}", "0" * 64
    started = time.time()
    database.commit([
        ("UPDATE bench_floor_task SET state = 'running', worker = %s, started_at = %s WHERE id = %s "
         "AND state = 'queued'", (worker, started, task_id)),
        ("INSERT INTO bench_floor_history VALUES (%s, 2, 'running', %s, %s, %s)", (task_id, worker, started, mac)),
    ])  # fmt: skip
    finished = time.time()
    database.commit([
        ("INSERT INTO bench_floor_output VALUES (%s, %s, %s)", (task_id, finished, "drain")),
        ("UPDATE bench_floor_task SET state = 'completed', finished_at = %s, result = %s WHERE id = %s "
         "AND state = 'running' AND worker = %s", (finished, '{"echo": "drain"}', task_id, worker)),
        ("INSERT INTO bench_floor_history VALUES (%s, 3, 'completed', %s, %s, %s)", (task_id, worker, finished, mac)),
        ("INSERT INTO bench_floor_metrics VALUES (%s, %s)", (task_id, finished - started)),
    ])  # fmt: skip
    _record_run()


# The mirror's compare-and-set: the entry is written unless the stored one has a version as new or newer.
MIRROR_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(cjson.decode(stored)['version']) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
FLOOR_AUDIT_KEY = b"bench-floor-audit-key"
_mirror_script: Any = None


def _chained(head: str, row: dict[str, Any]) -> str:
    """A history row's link: HMAC-SHA256 over the previous row's and this row's JSON."""
    text = json.dumps(row, sort_keys=True, separators=(",", ":"))
    return hmac.new(FLOOR_AUDIT_KEY, f"{head}|{text}".encode(), hashlib.sha256).hexdigest()


def _mirror(task_id: str, doc: dict[str, Any]) -> None:
    """The task's mirror entry, written by one compare-and-set script (one round trip)."""
    global _mirror_script
    if _mirror_script is None:
        _mirror_script = _redis().register_script(MIRROR_SCRIPT)
    key = f"{os.environ['BENCH_NOOP_KEY']}:mirror:{task_id}"
    _mirror_script(keys=[key], args=[json.dumps(doc, sort_keys=True, separators=(",", ":")), doc["version"]])


def _guarded_commit(task_id: str, version: int, head: str, change: dict[str, Any], statements: list) -> str:
    """One transition: the task row moved to its next version and chain head if it is still at ``version``, its
    history row and ``statements`` with it, then the mirror; the new head. A lost compare-and-set stops the drain."""
    row = {"task": task_id, "seq": version + 1, **change}
    link = _chained(head, row)
    sets = ", ".join(f"{name} = %s" for name in change["set"])
    changed = _floor_database().commit([
        (f"UPDATE bench_floor_task SET {sets}, version = %s, head = %s WHERE id = %s AND version = %s",
         (*change["set"].values(), version + 1, link, task_id, version)),
        ("INSERT INTO bench_floor_history VALUES (%s, %s, %s, %s, %s, %s)",
         (task_id, version + 1, change["set"]["state"], change["actor"], change["at"], link)),
        *statements,
    ])  # fmt: skip
    if changed[0] != 1:
        raise RuntimeError(f"guarded floor: task {task_id} moved past version {version} meanwhile")
    _mirror(task_id, {"id": task_id, **change["set"], "version": version + 1})
    return link


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's processor time running Python (a microsecond's sum between readings of
    the thread's clock): what a task's own code would take, without its memory traffic."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(100))


@app.task(name="bench.guarded_floor")
def guarded_floor(task_id: str, budget_ms: float = 0.0) -> None:
    """The floor's two commits with the least Crux's guarantees take (the module's docstring). ``budget_ms``: that
    much more processor time in the pool a task, half before each commit (the work that prepares a transition)."""
    worker = f"floor@{os.getpid()}"
    _burn(budget_ms / 2000)
    found = _floor_database().read("SELECT state, version, head FROM bench_floor_task WHERE id = %s", (task_id,))
    if found is None or found[0] != "queued":
        raise RuntimeError(f"guarded floor: task {task_id} is not queued: {found}")
    _, version, head = found
    started = time.time()
    claim = {"actor": worker, "at": started, "set": {"state": "running", "worker": worker, "started_at": started}}
    head = _guarded_commit(task_id, version, head, claim, [])
    _burn(budget_ms / 2000)
    finished = time.time()
    outcome = {
        "actor": worker,
        "at": finished,
        "set": {"state": "completed", "finished_at": finished, "result": '{"echo": "drain"}'},
    }
    _guarded_commit(task_id, version + 1, head, outcome, [
        ("INSERT INTO bench_floor_output VALUES (%s, %s, %s)", (task_id, finished, "drain")),
        ("INSERT INTO bench_floor_metrics VALUES (%s, %s)", (task_id, finished - started)),
    ])  # fmt: skip
    _record_run()
