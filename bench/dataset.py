"""Build large, realistic task data sets fast, for benchmarks only.

    python -m bench.dataset --tasks 100000 --engine sqlite   # times a fresh build

Tasks are inserted in bulk with their complete, correctly chained history (so
``verify_audit`` passes on them), a few outputs and metrics. This deliberately
goes around the one-task-at-a-time service door, which is what a benchmark
fixture needs and what the application never does.

The two cores share the work: a forked child process generates the rows
(random content, JSON, the hash chain) and encodes them for the database,
batch by batch, while this process loads the batch before: multi-row INSERTs
on SQLite, ``COPY ... FROM STDIN`` on PostgreSQL. The whole load is one
transaction. Secondary indexes (and, on PostgreSQL, unique and foreign-key
constraints) are dropped at its start and recreated at its end from the
database's own definitions, which sorts each index once instead of inserting
random keys row by row. The same seed gives the same rows as ever.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache, partial
from itertools import accumulate, chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

if TYPE_CHECKING:
    import sqlite3

    import psycopg
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field, JSONField, Model
    from django.db.models.fields.related import RelatedField

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


def configure(engine: str, name: str, *, fresh: bool) -> str:
    """Point Django at a benchmark database of ``engine``, migrated; emptied first if ``fresh``. No default: a script
    that names a shared data set (``crux_bench_<size>``, minutes to build) must say whether it may empty it.

    A new database starts as a copy of a template database migrated to the current migrations (made from the first
    one migrated, and named after a digest of every migration file, so a changed migration makes a new one): a dozen
    benchmarks start on an empty database, and running every migration took 3 to 5 s each."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
    if "REDIS_KEY_PREFIX" not in os.environ:  # else a parent process (or the module) chose it, and cleans up
        prefix = os.environ["REDIS_KEY_PREFIX"] = f"crux-bench-{os.getpid()}"
        atexit.register(_delete_run_keys, prefix)
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(ROOT))
    if engine == "sqlite":
        database: _SQLiteDatabase | _PostgresDatabase = _SQLiteDatabase(name)
    elif engine == "postgres":
        database = _PostgresDatabase(name)
    else:
        raise SystemExit(f"unknown engine {engine!r}: use sqlite or postgres")
    os.environ["DATABASE_URL"] = database.url
    import django

    django.setup()  # no connection yet: the database is made below
    from django.core.management import call_command
    from django.db import connections

    template = f"crux_bench_template_{_migrations_digest()}"
    new = database.prepare(fresh=fresh, template=template)
    call_command("migrate", verbosity=0)
    if not new and _signed_elsewhere():
        # Kept from a checkout with other audit keys (PostgreSQL's data sets are the server's, shared by every
        # checkout of the machine): verify_audit would find every chain broken here, so it is made again.
        print(f"{name} holds history signed with audit keys this checkout does not hold: made again", flush=True)
        connections.close_all()
        new = database.prepare(fresh=True, template=template)
        call_command("migrate", verbosity=0)
    if new and not database.exists(template):
        connections.close_all()
        database.save_as(template)
    return database.url


def _signed_elsewhere() -> bool:
    """Whether the database's history was signed with an audit key this checkout does not hold (``AUDIT_KEYS``):
    a data set built by another checkout. Every row of a data set is signed with its builder's newest key."""
    from tasks.keys import key_ids
    from tasks.models import TaskHistory

    signed = TaskHistory.objects.exclude(key_id="").order_by().values_list("key_id", flat=True)[:1]
    return any(key_id not in key_ids() for key_id in signed)


def _migrations_digest() -> str:
    """A digest of every migration file of the installed apps (their names and contents)."""
    import hashlib

    from django.db.migrations.loader import MigrationLoader

    digest = hashlib.sha256()
    migrations = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
    for key in sorted(migrations):
        module = sys.modules[type(migrations[key]).__module__]
        digest.update(repr(key).encode())
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


class _SQLiteDatabase:
    """A benchmark database file (var/bench/<name>.sqlite3); a template is a file beside it."""

    def __init__(self, name: str) -> None:
        self.path = self._path(name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{self.path}"

    @staticmethod
    def _path(name: str) -> Path:
        return ROOT / "var" / "bench" / f"{name}.sqlite3"

    def prepare(self, *, fresh: bool, template: str) -> bool:
        """Make the database ready to migrate (emptied if ``fresh``; a copy of ``template`` if it is new and the
        template exists); True if it is new."""
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if self.path.exists():
            return False
        if self.exists(template):
            shutil.copyfile(self._path(template), self.path)
        return True

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def save_as(self, template: str) -> None:
        """Copy this database, just migrated, as ``template``: the last connection closed has checkpointed the
        write-ahead log into the file; written whole, then renamed."""
        target = self._path(template)
        partial_copy = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(self.path, partial_copy)
        partial_copy.replace(target)


class _PostgresDatabase:
    """A benchmark database of the PostgreSQL server (BENCH_PG_URL); a template is a database of the server."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.base = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
        self.url = f"{self.base}/{name}"

    def _execute(self, sql: str, params: tuple[str, ...] = ()) -> tuple[Any, ...] | None:
        """Run one statement on the server's maintenance database; its first row, if it returns rows."""
        import psycopg

        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchone() if cursor.description else None

    def prepare(self, *, fresh: bool, template: str) -> bool:
        """As ``_SQLiteDatabase.prepare``."""
        if not fresh and self.exists(self.name):
            return False
        self._execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        copy = f' TEMPLATE "{template}"' if self.exists(template) else ""
        self._execute(f'CREATE DATABASE "{self.name}"{copy}')
        return True

    def exists(self, name: str) -> bool:
        return self._execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)) is not None

    def save_as(self, template: str) -> None:
        """Copy this database, just migrated, as ``template`` (no connection to it may be open); a process that
        made the same template meanwhile made the same copy."""
        import psycopg

        try:
            self._execute(f'CREATE DATABASE "{template}" TEMPLATE "{self.name}"')
        except psycopg.errors.DuplicateDatabase:
            pass


def _delete_run_keys(prefix: str) -> None:
    """Drop what the run left in Redis under its prefix: mirror entries, throttle counters, cached tokens."""
    from bench.redis_keys import delete_keys
    from persistence import mirror

    delete_keys(mirror.client(), f"{prefix}:", f"{prefix}.")


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

    A forked child process generates the rows (``_Generator``) and hands them
    over in batches of ``batch_size`` tasks, already encoded for the database;
    this process loads each batch (``_sqlite_load`` / ``_postgres_load``) while
    the child makes the next. No model instances, no ORM insert compiler: the
    content is what ``bulk_create`` of the equivalent model instances writes
    (defaults of unset fields, ``auto_now`` stamps, the hash chain of
    ``tasks.audit.row_hash``), the same rows for the same seed.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from tqdm import tqdm

    from tasks.models import Task, TaskHistory, TaskOutput

    users = [
        (user.pk, user.username)
        for user in (get_user_model().objects.get_or_create(username=f"bench{i}")[0] for i in range(5))
    ]
    sqlite = connection.vendor == "sqlite"
    if not sqlite and connection.vendor != "postgresql":
        raise SystemExit(f"the data-set builder supports sqlite and postgresql, not {connection.vendor}")
    table = _SQLiteTable if sqlite else _PostgresTable
    tables = [table(connection, model) for model in (Task, TaskHistory, TaskOutput)]
    batches = _Generator(tables, mix, seed, outputs, users, timezone.now()).batches(count, batch_size)
    load = _sqlite_load if sqlite else _postgres_load
    with _in_child(batches) as produced, load(connection, tables) as write:
        with tqdm(total=count, unit="task", desc="building", file=sys.stderr) as bar:
            for size, payloads in produced:
                write(payloads)
                bar.update(size)


@contextmanager
def _in_child(items: Iterator) -> Iterator[Iterator]:
    """``items``, computed by a forked child process on the other core and handed over through a pipe.

    Forked, so the child has Django set up and the same (possibly frozen)
    clock; it never touches the database connection it inherits, and ends
    with ``os._exit``, so nothing closes that either. Its garbage collector is
    off: the rows make no reference cycles, and collections would only scan
    the objects it keeps. The pipe holds the child at most one batch ahead.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def produce() -> None:
        reader.close()
        gc.disable()
        try:
            for item in items:
                writer.send(item)
        except BaseException:
            writer.send(traceback.format_exc())
        else:
            writer.send(None)

    child = context.Process(target=produce, name="bench-dataset-rows", daemon=True)
    child.start()
    writer.close()

    def received() -> Iterator:
        while True:
            if not reader.poll() and reader not in wait([reader, child.sentinel]):
                raise RuntimeError(f"the data-set generator died (exit code {child.exitcode})")
            item = reader.recv()
            if item is None:
                return
            if isinstance(item, str):
                raise RuntimeError(f"the data-set generator failed:\n{item}")
            yield item

    try:
        yield received()
    finally:
        reader.close()
        if child.is_alive():
            child.terminate()
        child.join()


SPAN_SECONDS = 30 * 86400  # the data set's tasks were created over the last 30 days


class _Generator:
    """The data set's rows, drawn from one ``Random(seed)``, encoded by ``tables``.

    History rows were the costly part: a canonical JSON and an HMAC-SHA256 each. But
    a history row is the same for every task of the same state, title and
    owner, apart from its task's id and its time. So each distinct event is
    built once (``_Event``): its fields, adapted for the table, and its
    canonical JSON (by ``tasks.audit.canonical_json``) with placeholders that
    each row fills with its id and time before hashing. The first task of
    every batch is hashed again by ``tasks.audit.row_hash`` itself, as a check.
    """

    def __init__(
        self, tables: Sequence[_Table], mix: dict[str, float], seed: int, outputs: int, users: list, now: datetime
    ) -> None:
        from tasks.audit import GENESIS_HASH, HASHED_FIELDS, canonical_json, chain_link, format_timestamp, row_hash
        from tasks.keys import current_key_id

        self.genesis, self.hashed_fields, self.canonical_json = GENESIS_HASH, HASHED_FIELDS, canonical_json
        self.format_timestamp, self.row_hash, self.chain_link = format_timestamp, row_hash, chain_link
        self.key_id = current_key_id()
        self.rng = random.Random(seed)
        self.states, weights = zip(*mix.items(), strict=True)
        self.cum_weights = list(accumulate(weights))  # what rng.choices(states, weights) computes on every call
        self.tables, self.outputs, self.users, self.now = tables, outputs, users, now
        self.events: dict[tuple, _Event] = {}
        self.check = False

    def batches(self, count: int, batch_size: int) -> Iterator[tuple[int, list]]:
        """``(tasks, [payload of each table])`` per batch of ``batch_size`` tasks."""
        from django.utils import timezone

        rng, users = self.rng, self.users
        task_table, _, output_table = self.tables
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            stamp = timezone.now()  # the auto_now ``updated_at`` that bulk_create's pre_save would set
            tasks: list[list] = []
            history: list[list] = []
            outs: list[list] = []
            self.check = True
            for index in range(start, start + size):
                state = rng.choices(self.states, cum_weights=self.cum_weights)[0]
                task = self.task(state, rng.choice(users), history, self.created_at(index, count))
                created_output_at = task["updated_at"]
                task["updated_at"] = stamp
                if state in ("completed", "failed"):
                    outs.extend(output_table.row(o) for o in self.task_outputs(task["id"], created_output_at))
                if state == "completed":
                    task.update(self.metrics())
                tasks.append(task_table.row(task))
            rows = (tasks, history, outs)
            yield size, [table.pack(values) for table, values in zip(self.tables, rows, strict=True)]

    def created_at(self, index: int, count: int) -> datetime:
        """The creation time of the ``index``-th of ``count`` tasks: uniform over the 30 days before the last
        minute, as ever, but in insertion order, as a real table fills (each task in its own slice of the span).
        Reads in list order (newest first) then meet the rows in the order they sit in the table and its search
        index, as in production, where random times sent every list-order read of a large set across the file."""
        span = SPAN_SECONDS - 60
        return (
            self.now - timedelta(seconds=SPAN_SECONDS) + timedelta(seconds=(index + self.rng.random()) * span / count)
        )

    def task(self, state: str, owner: tuple[int, str], history: list[list], created: datetime) -> dict:
        """One task created at ``created``, as a dict by attname; its hash-chained history rows (encoded) go to
        ``history``."""
        rng, now = self.rng, self.now
        history_table = self.tables[1]
        owner_id = owner[0]
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
        prev = self.genesis
        at = created
        task_text = str(task_id)
        path = LIFECYCLES[state]
        for seq, step in enumerate(path, start=1):
            at = at + timedelta(seconds=rng.uniform(0.01, 30))
            event = self.event(state, seq, title, owner)
            content = event.canonical.replace(_TASK_ID, task_text).replace(_CREATED_AT, self.format_timestamp(at))
            link = self.chain_link(self.key_id, prev, content)
            row = {"task_id": task_id, "created_at": at, "hash": link}
            if self.check and link != self.row_hash(prev, {**event.fields, **row}):
                raise RuntimeError("the builder's history hashes disagree with tasks.audit.row_hash")
            history.append(history_table.row(row, event.base))
            prev = link
            if step == "running":
                task["started_at"] = at
                task["attempt_count"] = 1
                task["worker_id"] = "celery@bench:1"
                task["lease_expires_at"] = now + timedelta(hours=1)
            if step == "queued":
                # live queued tasks were just dispatched, so the re-dispatch sweep leaves them alone
                task["dispatched_at"], task["dispatch_count"] = (now if state == "queued" else at), 1
        self.check = False
        if state in ("completed", "failed", "cancelled"):
            task["completed_at"] = at
            task["lease_expires_at"] = None
        if state == "completed":
            task["progress"] = 1.0
            task["result"] = {"answer": rng.getrandbits(64), "converged": True}
        if state == "failed":
            task["last_error"], task["error_count"] = "RuntimeError: bench failure", 1
        task["updated_at"] = at
        task["history_count"], task["history_head"] = len(path), prev
        return task

    def event(self, state: str, seq: int, title: str, owner: tuple[int, str]) -> _Event:
        """History row ``seq`` of a task ending in ``state``: all but its task's id, its time and hashes."""
        key = (state, seq, title, owner)
        event = self.events.get(key)
        if event is None:
            owner_id, owner_name = owner
            path = LIFECYCLES[state]
            first = seq == 1
            step = path[seq - 1]
            fields = {
                "seq": seq,
                "event": "created" if first else "transition",
                "state_from": "" if first else path[seq - 2],
                "state_to": step,
                "actor": owner_name if first else "system:worker",
                "actor_user_id": owner_id if first else None,
                "channel": "api" if first else "worker",
                "reason": "submitted" if first else f"moved to {step}",
                "error_message": "RuntimeError: bench failure" if step == "failed" else "",
                "details": {"changes": {"title": title} if first else {}},  # the state: in state_from, state_to
                "key_id": self.key_id,
            }
            # row_hash's content: str(task_id) and format_timestamp(created_at) go where the placeholders are
            placeholders = {"task_id": _TASK_ID, "created_at": _CREATED_AT}
            content = {name: placeholders.get(name) or fields[name] for name in self.hashed_fields}
            event = _Event(fields, self.canonical_json(content), self.tables[1].row(fields))
            self.events[key] = event
        return event

    def task_outputs(self, task_id: uuid.UUID, at: datetime) -> Iterator[dict]:
        for i in range(self.outputs):
            yield {
                "task_id": task_id,
                "output_type": "stdout" if i == 0 else "log",
                "content": f"step {i}: " + " ".join(self.rng.choices(WORDS, k=12)),
                "created_at": at,
            }

    def metrics(self) -> dict:
        """A completed task's execution figures (columns of its row)."""
        rng = self.rng
        prompt, completion = rng.randint(500, 9000), rng.randint(200, 6000)
        return {
            "processing_time_seconds": rng.uniform(1, 300),
            "iterations": rng.randint(1, 5),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "stop_reason": "evaluator_stop",
            "converged": True,
        }


# Private-use characters: JSON keeps them as they are, and no generated text contains them.
_TASK_ID, _CREATED_AT = "\ue000task_id\ue000", "\ue000created_at\ue000"


class _Event(NamedTuple):
    fields: dict  # by attname, all but task_id, created_at and hash
    canonical: str  # canonical JSON of the hashed fields, with _TASK_ID and _CREATED_AT
    base: list  # the encoded row, fields set, the rest at the defaults


class _Table:
    """A model's columns and the conversion of a row dict (by attname) to the database's values.

    Columns are the model's concrete fields, less an auto-increment primary key
    (the database numbers those rows, in insertion order as bulk_create did).
    Unset fields take the field's default, adapted once; subclasses adapt the
    values for their database and pack a batch of rows for loading.
    """

    NULL: str | None = None

    def __init__(self, connection: BaseDatabaseWrapper, model: type[Model]) -> None:
        from django.db.models.fields import AutoFieldMixin

        fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoFieldMixin)]
        quote = connection.ops.quote_name
        self.db_table = model._meta.db_table
        self.name = quote(self.db_table)
        self.columns = ", ".join(quote(cast(str, f.column)) for f in fields)  # a concrete field has a column
        self.slots: dict[str, tuple[int, Callable | None]] = {}
        self.template: list = []
        from tasks.models import CodedChoiceField, CompactDateTimeField, CompactUUIDField, CompressedTextField

        for index, field in enumerate(fields):
            target = cast("RelatedField", field).target_field if field.is_relation else field
            compact = (CompactUUIDField, CompactDateTimeField, CompressedTextField)
            if isinstance(target, CodedChoiceField):  # its subclasses (CodedNameField) too
                kind = "CodedChoiceField"
            else:
                kind = type(target).__name__ if isinstance(target, compact) else target.get_internal_type()
            adapt = self.adapter(connection, kind, target)
            self.slots[field.attname] = (index, adapt)
            default = None if getattr(field, "auto_now", False) else field.get_default()
            self.template.append(self.NULL if default is None else default if adapt is None else adapt(default))

    def adapter(self, connection: BaseDatabaseWrapper, kind: str, field: Field) -> Callable | None:
        """The function turning a Python value of ``field``, of ``kind``, into its value here (None: as it is)."""
        raise NotImplementedError

    def row(self, values: dict, base: list | None = None) -> list:
        """The row in column order: ``values`` adapted, the other columns from ``base`` (else the defaults)."""
        out = (self.template if base is None else base).copy()
        slots, null = self.slots, self.NULL
        for name, value in values.items():
            index, adapt = slots[name]
            out[index] = null if value is None else value if adapt is None else adapt(value)
        return out

    def pack(self, rows: list[list]) -> Any:
        """A batch's rows (from ``row``) in the form ``load`` takes."""
        raise NotImplementedError

    def load(self, cursor: Any, payload: Any) -> None:
        """Write a batch packed by ``pack`` through ``cursor``."""
        raise NotImplementedError


class _SQLiteTable(_Table):
    """Values as Django's SQLite backend stores them, inserted ``ROWS_PER_STATEMENT`` rows to an INSERT.

    UUIDs as 32-char hex (task ids as their 16 bytes), datetimes as Django's naive strings (the task domain's as
    integers: ``tasks.models.CompactDateTimeField``), history rows' choices as their one-character codes
    (``tasks.models.CodedChoiceField``), JSON as text (a history row's details as their field stores them), booleans
    as 0/1. A multi-row INSERT (fewer rows under SQLite's parameter limit) saves most of the per-statement cost of
    ``executemany``.
    """

    ROWS_PER_STATEMENT = 100

    def __init__(self, connection: BaseDatabaseWrapper, model: type[Model]) -> None:
        super().__init__(connection, model)
        self.width = len(self.template)
        limit = cast(int, connection.features.max_query_params)  # SQLite's is always a number
        self.per_statement = max(1, min(self.ROWS_PER_STATEMENT, limit // self.width))
        self.one = f"({', '.join(['?'] * self.width)})"

    def adapter(self, connection: BaseDatabaseWrapper, kind: str, field: Field) -> Callable | None:
        if kind == "UUIDField":
            return _hex
        if kind == "CompactUUIDField":
            return _uuid_bytes
        if kind == "DateTimeField":
            return _remembered(_naive_text(connection.timezone))
        if kind == "CompactDateTimeField":
            return _remembered(_epoch_integer(connection.alias))
        if kind == "CodedChoiceField":  # the field's own code
            return _remembered(partial(field.get_db_prep_value, connection=connection, prepared=True))
        if kind in ("CompressedTextField", "DeflatedJSONField"):  # the text, or its deflated stream where that pays
            return partial(field.get_db_prep_value, connection=connection, prepared=True)
        if kind == "JSONField":
            return partial(connection.ops.adapt_json_value, encoder=cast("JSONField", field).encoder)
        if kind == "BooleanField":
            return int
        if kind == "BinaryField":
            return _digest_bytes
        return None

    def sql(self, rows: int) -> str:
        return f"INSERT INTO {self.name} ({self.columns}) VALUES " + ", ".join([self.one] * rows)

    def pack(self, rows: list[list]) -> list[tuple]:
        """The parameters of one multi-row INSERT each (the last may hold fewer rows)."""
        per = self.per_statement
        return [tuple(chain.from_iterable(rows[i : i + per])) for i in range(0, len(rows), per)]

    def load(self, cursor: sqlite3.Cursor, groups: list[tuple]) -> None:
        full = [group for group in groups if len(group) == self.per_statement * self.width]
        if full:
            cursor.executemany(self.sql(self.per_statement), full)
        if len(full) < len(groups):
            cursor.execute(self.sql(len(groups[-1]) // self.width), groups[-1])


class _PostgresTable(_Table):
    """Rows in the text format of PostgreSQL's ``COPY ... FROM STDIN``, loaded with psycopg's ``cursor.copy``.

    Each value is the text that PostgreSQL reads back as what psycopg's
    parameters stored: UUIDs as hex, ISO datetimes with their offset, JSON
    text, ``t``/``f``, shortest round-trip floats; ``\\N`` is NULL. COPY
    saves the per-statement and per-parameter work of an INSERT.
    """

    NULL = "\\N"

    def adapter(self, connection: BaseDatabaseWrapper, kind: str, field: Field) -> Callable | None:
        if kind in ("UUIDField", "CompactUUIDField"):
            return _hex
        if kind in ("DateTimeField", "CompactDateTimeField"):
            return _remembered(datetime.isoformat)
        if kind == "JSONField":
            return lambda value: _copy_text(json.dumps(value))
        if kind == "BooleanField":
            return lambda value: "t" if value else "f"
        if kind == "BinaryField":  # bytea's hex input, its backslash doubled for COPY's text format
            return lambda value: "\\\\x" + _digest_bytes(value).hex()
        if kind == "CodedChoiceField":  # the field's own code where it codes on PostgreSQL, else the name
            prepare = partial(field.get_db_prep_value, connection=connection, prepared=True)
            return lambda value: _copy_text(prepare(value))
        if kind in ("CompressedTextField", "DeflatedJSONField"):  # bytea: the field's bytes, as BinaryField's
            prepare = partial(field.get_db_prep_value, connection=connection, prepared=True)
            return lambda value: "\\\\x" + prepare(value).hex()
        if kind in ("CharField", "TextField"):
            return _copy_text
        if kind.endswith(("IntegerField", "AutoField", "FloatField")):
            return str
        raise SystemExit(f"the data-set builder cannot load a {kind} into PostgreSQL")

    def pack(self, rows: list[list]) -> bytes:
        return "".join(["\t".join(row) + "\n" for row in rows]).encode()

    def load(self, cursor: psycopg.Cursor[Any], data: bytes) -> None:
        if data:
            with cursor.copy(f"COPY {self.name} ({self.columns}) FROM STDIN") as copy:
                copy.write(data)


def _hex(value: uuid.UUID) -> str:
    return value.hex


def _uuid_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


def _digest_bytes(value: str | bytes) -> bytes:
    """A digest's bytes, from the hex text the chain is computed in (``tasks.models.DigestField``)."""
    return bytes.fromhex(value) if isinstance(value, str) else bytes(value)


@cache
def _remembered(adapt: Callable[[datetime], str]) -> Callable[[datetime], str]:
    """``adapt`` remembering its last few thousand answers, one memory for all tables: a task's times recur
    in its rows (a history row's time is the task's start or end, its outputs' time), "now" in every task."""
    remembered: dict[datetime, str] = {}

    def adapt_remembered(value: datetime) -> str:
        text = remembered.get(value)
        if text is None:
            if len(remembered) >= 4096:
                remembered.clear()
            text = remembered[value] = adapt(value)
        return text

    return adapt_remembered


@cache
def _epoch_integer(alias: str) -> Callable[[datetime], int]:
    """What ``tasks.models.CompactDateTimeField`` stores on the SQLite database ``alias``: one function for every
    such field, so that ``_remembered`` keeps one memory for all of them, as for Django's times."""
    from django.db import connections

    from tasks.models import CompactDateTimeField

    return partial(CompactDateTimeField().get_db_prep_value, connection=connections[alias], prepared=True)


@cache
def _naive_text(zone: tzinfo | None) -> Callable[[datetime], str]:
    """What ``adapt_datetimefield_value`` makes of an aware datetime (the text of its naive time in the
    connection's zone), without its per-call checks; the slice spares ``replace(tzinfo=None)``'s cost."""
    if zone is None:  # USE_TZ = False: datetimes are naive already
        return str
    if zone is UTC:
        return lambda value: value.astimezone(UTC).isoformat(" ")[:-6]  # less "+00:00"
    return lambda value: str(value.astimezone(zone).replace(tzinfo=None))


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """``value`` escaped for COPY's text format: few values need it, and looking costs less than translating."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _writer(tables: Sequence[_Table], cursor: sqlite3.Cursor | psycopg.Cursor[Any]) -> Callable[[list], None]:
    """The function loading one batch (a payload per table, in ``tables``' order) through ``cursor``."""

    def write(batch: list) -> None:
        for table, payload in zip(tables, batch, strict=True):
            table.load(cursor, payload)

    return write


# While loading, the SQLite connection's cache holds the random-key indexes of a million tasks (the default
# 2 MiB does not); its own setting comes back after.
_SQLITE_LOAD_PRAGMAS = {"cache_size": -1024 * 1024}  # KiB: 1 GiB


@contextmanager
def _sqlite_load(connection: BaseDatabaseWrapper, tables: Sequence[_Table]) -> Iterator[Callable[[list], None]]:
    """A writer of batches into SQLite, all in one transaction: the tables' secondary indexes dropped first
    and recreated at the end from their own ``sqlite_master`` text (an error anywhere rolls it all back).

    Building an index once sorts its keys; keeping it during the load inserts
    them at random places. One transaction writes each page once, where a
    commit every few thousand tasks writes the pages of the random-key indexes
    that remain (those of primary keys and UNIQUE constraints, which SQLite
    cannot drop) again and again. The WAL, which grows to the size of the
    data, is truncated after the commit.
    """
    from django.db import transaction

    from tasks import db_triggers

    connection.ensure_connection()
    raw = connection.connection
    previous = {name: raw.execute(f"PRAGMA {name}").fetchone()[0] for name in _SQLITE_LOAD_PRAGMAS}
    for name, value in _SQLITE_LOAD_PRAGMAS.items():
        raw.execute(f"PRAGMA {name} = {int(value)}")
    try:
        with transaction.atomic():
            cursor = raw.cursor()
            try:
                names = [table.db_table for table in tables]
                indexes = cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                    f"AND tbl_name IN ({', '.join(['?'] * len(names))}) ORDER BY rowid",
                    names,
                ).fetchall()
                for name, _ in indexes:
                    cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
                # The search index's triggers would index each task as it comes: rebuilt once at the end instead.
                db_triggers.drop_search_triggers(connection)
                yield _writer(tables, cursor)
                for _, sql in indexes:
                    cursor.execute(sql)
                db_triggers.install_search(connection)
            finally:
                cursor.close()
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        for name, value in previous.items():
            raw.execute(f"PRAGMA {name} = {int(value)}")


@contextmanager
def _postgres_load(connection: BaseDatabaseWrapper, tables: Sequence[_Table]) -> Iterator[Callable[[list], None]]:
    """A writer of batches into PostgreSQL, all in one transaction: the tables' secondary indexes, unique and
    foreign-key constraints dropped first and recreated at the end from their catalogue definitions (an error
    anywhere rolls it all back; the tables and ``auth_user`` stay locked until the commit), then the tables
    analysed, so that what runs next has their statistics.

    Building an index once sorts its keys, and adding a foreign key checks all
    rows in one join, where each row would have queued a check of its own
    (and a deferred check would forbid the CREATE INDEX in this transaction).
    """
    import psycopg
    from django.db import transaction

    names = [table.name for table in tables]
    with transaction.atomic():
        cursor = psycopg.Cursor(connection.connection)
        try:
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            constraints = cursor.execute(
                "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('f', 'u') ORDER BY contype, oid",
                [names],
            ).fetchall()
            indexes = cursor.execute(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "
                "WHERE indrelid = ANY(%s::regclass[]) AND NOT indisprimary AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) "
                "ORDER BY indexrelid",
                [names],
            ).fetchall()
            for table, name, _ in constraints:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            for name, _ in indexes:
                cursor.execute(f"DROP INDEX {name}")
            yield _writer(tables, cursor)
            for _, sql in indexes:
                cursor.execute(sql)
            for table, name, definition in reversed(constraints):
                cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        finally:
            cursor.close()
    with connection.cursor() as analyse:
        analyse.execute(f"ANALYZE {', '.join(names)}")


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Time a fresh build of the realistic data set.")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="build the data set the benchmarks share (crux_bench_<N>) unless it is there, instead of timing a "
        "fresh build of its own",
    )
    args = parser.parse_args()
    if args.shared:
        configure(args.engine, f"crux_bench_{args.tasks}", fresh=False)
        ensure(args.tasks)
        return
    configure(args.engine, f"crux_bench_build_{args.tasks}", fresh=True)
    started = time.perf_counter()
    build(args.tasks, REALISTIC_MIX)
    elapsed = time.perf_counter() - started
    print(
        f"\ndata-set build — engine {args.engine}, {args.tasks} tasks, revision {git_revision()}: "
        f"{elapsed:.1f} s, {args.tasks / elapsed:,.0f} tasks/s"
    )


if __name__ == "__main__":
    main()
