"""The storage floor of a completed task: the smallest schema that still holds what Crux's invariants require,
filled with the storage benchmark's tasks and measured beside the current schema.

    python -m bench.storage_floor --engine sqlite --tasks 10000
    python -m bench.storage_floor --engine postgres --tasks 10000

Issue 16 asks for ≤ 1 MB per 1,000 completed tasks (≤ 1,000 bytes a task) with indexes under 20 % of it. This
measures what is physically reachable: a compact schema in raw SQL (no ORM, no migration of the project), loaded
with the very tasks of ``bench.scale``'s storage data set (``bench.written``: tasks submitted and run through Crux's
own code, built if missing) and measured by the same function (``bench.scale.storage_components``: SQLite's pages,
PostgreSQL's tables, TOAST and indexes, after a VACUUM), in two variants: as is, and with JSON, history details and
output text deflated (zlib, kept only where smaller; the details against the project's own dictionary; the searched
title and description stay plain).

What the floor holds for each task: its id (16-byte binary UUID), owner, state, handler, role, provider, model,
created/started/completed times (epoch microseconds: what the current schema holds), attempts, its worker,
title, description, request payload, result, metadata, acceptance criteria (compact JSON), outputs (type, time,
text), metrics (one-to-one, so in the task's row), and the options, errors and soft deletion of a task that has
any (``task_extra``, a row only then; none here). Its history: one append-only row per change (triggers refuse
UPDATE and DELETE) naming when, the event, the state reached, who (``principal``: name and user), through what
(channel), why (``label``), under which audit key, and its HMAC-SHA256 as 32 bytes: the project's own MACs,
which ``tasks.audit.row_hash`` recomputes from the floor's columns alone (checked for every row, with every
other kept value, after each load). Enums are small integers; repeated strings (handler, role, provider, model,
worker, stop reason, reason, key id) are references into ``label``. Indexes: the primary keys (history and
outputs by task and sequence), the task id, the owner's list by creation time and the text search index
(SQLite: the same FTS5 trigram table as today; PostgreSQL: one pg_trgm GIN over title and description).

A history row's details (its ``details``, compact JSON) are kept as written: each change's fields before and after,
and a new task's submitted values, are what the audit records of it. Derived from the task's row instead, they
would say only what that row says now, which a write that goes around the audit can alter.

Not stored, because derivable: the previous MAC (the previous row's), a row's state before (the previous row's state
after), the task's chain head and history count, total tokens (prompt + completion), a completed task's progress
(1). Not stored, because only an unfinished task needs them: lease, heartbeat, dispatch bookkeeping (time, count,
epoch, Celery id), current phase; nor the ``updated_at`` stamps (the newest history row says when it last changed).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from bench.dataset import ROOT, git_revision
from bench.report import record
from bench.scale import INDEX_SHARE_GOAL, MB, STORAGE_GOAL, run_child, storage_components
from bench.written import written_tasks

BUDGET_BYTES = STORAGE_GOAL * MB / 1000  # a task's share of the goal per 1,000 completed tasks
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# The user's JSON, by field, with the value a NULL stands for.
JSON_FIELDS: dict[str, Any] = {"request_payload": {}, "result": None, "metadata": {}, "acceptance_criteria": {}}
METRIC_FIELDS = ("processing_time_seconds", "iterations", "prompt_tokens", "completion_tokens", "converged")
# Task columns that are at their default for most tasks: a row of task_extra holds them when one is not.
EXTRA_FIELDS = (
    "queue", "priority", "retry_backoff", "soft_time_limit", "time_limit", "run_after", "target_dir", "full_access",
    "branch", "worktree_path", "base_branch", "commit_hash", "provider_override", "repository_url", "last_error",
    "error_count", "partial_results", "deleted_at", "deleted_by_id", "delete_reason",
)  # fmt: skip
# Output columns of file outputs only: a row of output_file holds them.
OUTPUT_FILE_FIELDS = ("file_path", "file_size", "mime_type", "commit_hash", "branch")

SQLITE_SCHEMA = """
CREATE TABLE label (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE principal (id INTEGER PRIMARY KEY, name TEXT NOT NULL, user_id INTEGER, UNIQUE (name, user_id));
CREATE TABLE task (
    n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, owner INTEGER NOT NULL, state INTEGER NOT NULL,
    handler INTEGER NOT NULL, role INTEGER, provider INTEGER, model INTEGER,
    created INTEGER NOT NULL, started INTEGER, completed INTEGER,
    attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, worker INTEGER,
    title TEXT NOT NULL, description TEXT NOT NULL, request_payload, result, metadata, acceptance_criteria,
    processing_time REAL, iterations INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,
    stop_reason INTEGER, converged INTEGER
);
CREATE TABLE task_extra (
    task INTEGER PRIMARY KEY REFERENCES task (n), queue, priority, retry_backoff, soft_time_limit, time_limit,
    run_after, target_dir, full_access, branch, worktree_path, base_branch, commit_hash, provider_override,
    repository_url, last_error, error_count, partial_results, deleted_at, deleted_by, delete_reason
);
CREATE TABLE history (
    task INTEGER NOT NULL REFERENCES task (n), seq INTEGER NOT NULL, at INTEGER NOT NULL, event INTEGER NOT NULL,
    state INTEGER NOT NULL, channel INTEGER NOT NULL, actor INTEGER NOT NULL, reason INTEGER NOT NULL,
    key INTEGER NOT NULL, mac BLOB NOT NULL, error_message TEXT, details, PRIMARY KEY (task, seq)
) WITHOUT ROWID;
CREATE TABLE output (
    task INTEGER NOT NULL REFERENCES task (n), seq INTEGER NOT NULL, type INTEGER NOT NULL, at INTEGER NOT NULL,
    content NOT NULL, PRIMARY KEY (task, seq)
) WITHOUT ROWID;
CREATE TABLE output_file (
    task INTEGER NOT NULL, seq INTEGER NOT NULL, file_path, file_size, mime_type, commit_hash, branch,
    PRIMARY KEY (task, seq)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE task_search USING fts5(
    title, description, content='task', content_rowid='n', tokenize='trigram', detail='none', columnsize=0
);
CREATE TRIGGER history_no_update BEFORE UPDATE ON history BEGIN SELECT RAISE(ABORT, 'append-only'); END;
CREATE TRIGGER history_no_delete BEFORE DELETE ON history BEGIN SELECT RAISE(ABORT, 'append-only'); END;
"""
SQLITE_AFTER_LOAD = """
CREATE INDEX task_owner_created ON task (owner, created);
INSERT INTO task_search (task_search) VALUES ('rebuild');
INSERT INTO task_search (task_search) VALUES ('optimize');
"""

# Columns by alignment (8-byte, 16-byte uuid, 4, 2, 1, then variable length), so no row carries padding.
# JSON and output text: ``json``/``text``, or (the zlib variant) deflated into the ``_z`` column beside.
POSTGRES_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE label (id int PRIMARY KEY, text text NOT NULL UNIQUE);
CREATE TABLE principal (id int PRIMARY KEY, name text NOT NULL, user_id int, UNIQUE (name, user_id));
CREATE TABLE task (
    created bigint NOT NULL, started bigint, completed bigint, processing_time double precision,
    prompt_tokens bigint, completion_tokens bigint,
    id uuid PRIMARY KEY, n int NOT NULL, owner int NOT NULL, handler int NOT NULL, role int, provider int,
    model int, worker int, iterations int, stop_reason int,
    state smallint NOT NULL, attempts smallint NOT NULL, max_attempts smallint NOT NULL, converged boolean,
    title text NOT NULL, description text NOT NULL,
    request_payload json, result json, metadata json, acceptance_criteria json,
    request_payload_z bytea, result_z bytea, metadata_z bytea, acceptance_criteria_z bytea
);
CREATE TABLE task_extra (
    task int PRIMARY KEY, queue text, priority smallint, retry_backoff double precision,
    soft_time_limit double precision, time_limit double precision, run_after bigint, target_dir text,
    full_access boolean, branch text, worktree_path text, base_branch text, commit_hash text,
    provider_override text, repository_url text, last_error text, error_count int, partial_results json,
    deleted_at bigint, deleted_by int, delete_reason text
);
CREATE TABLE history (
    at bigint NOT NULL, task int NOT NULL, actor int NOT NULL, reason int NOT NULL,
    seq smallint NOT NULL, event smallint NOT NULL, state smallint NOT NULL, channel smallint NOT NULL,
    key smallint NOT NULL, mac bytea NOT NULL, error_message text, details json, details_z bytea,
    PRIMARY KEY (task, seq)
);
CREATE TABLE output (
    at bigint NOT NULL, task int NOT NULL, seq smallint NOT NULL, type smallint NOT NULL,
    content text, content_z bytea, PRIMARY KEY (task, seq)
);
CREATE TABLE output_file (
    task int NOT NULL, seq smallint NOT NULL, file_path text, file_size bigint, mime_type text, commit_hash text,
    branch text, PRIMARY KEY (task, seq)
);
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION append_only();
"""
POSTGRES_AFTER_LOAD = """
ALTER TABLE task ADD CONSTRAINT task_n_key UNIQUE (n);
ALTER TABLE task_extra ADD FOREIGN KEY (task) REFERENCES task (n);
ALTER TABLE history ADD FOREIGN KEY (task) REFERENCES task (n);
ALTER TABLE output ADD FOREIGN KEY (task) REFERENCES task (n);
CREATE INDEX task_owner_created ON task (owner, created);
CREATE INDEX task_search ON task USING gin (upper(title || E'\\n' || description) gin_trgm_ops);
"""


@dataclass
class Interned:
    """Repeated strings (or principals) as small integers: each distinct value once, numbered from 1."""

    ids: dict[Any, int] = field(default_factory=dict)

    def __call__(self, value: Any) -> int:
        return self.ids.setdefault(value, len(self.ids) + 1)

    def rows(self, *columns: str) -> list[dict[str, Any]]:
        """The dictionary's rows: ``id`` and the value (a tuple: one column each)."""
        return [
            dict(zip(("id", *columns), (number, *value) if isinstance(value, tuple) else (number, value), strict=True))
            for value, number in self.ids.items()
        ]


class Enums(NamedTuple):
    """The project's choices, numbered by their position: the floor's small integers."""

    states: list[str]
    channels: list[str]
    events: list[str]
    output_types: list[str]


def enums() -> Enums:
    from tasks.audit import Channel, HistoryEvent
    from tasks.models import OutputType
    from tasks.states import TaskState

    return Enums(list(TaskState.values), list(Channel.values), list(HistoryEvent.values), list(OutputType.values))


def micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - EPOCH) // MICROSECOND


def moment(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + value * MICROSECOND


def compact_json(value: Any, default: Any = None) -> str | None:
    """The user's JSON as the shortest text; None for the field's ``default``."""
    return None if value == default else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def deflated(text: str | None, dictionary: bytes = b"") -> bytes | str | None:
    """``text`` deflated (raw zlib, level 9; against a preset ``dictionary`` if given) when that is shorter, else as
    it is."""
    if text is None:
        return None
    raw = text.encode()
    preset: dict[str, Any] = {"zdict": dictionary} if dictionary else {}
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, **preset)
    packed = packer.compress(raw) + packer.flush()
    return packed if len(packed) < len(raw) else text


def inflated(value: Any, dictionary: bytes = b"") -> Any:
    if not isinstance(value, (bytes, memoryview)):
        return value
    unpacker = zlib.decompressobj(-15, **({"zdict": dictionary} if dictionary else {}))
    return (unpacker.decompress(bytes(value)) + unpacker.flush()).decode()


def dictionaries() -> dict[str, bytes]:
    """The columns the zlib variant deflates against a preset dictionary: a history row's details, against the
    project's own (``tasks.models.DeflatedJSONField``)."""
    from tasks.models import HISTORY_DETAILS_DICTIONARY

    return {"details": HISTORY_DETAILS_DICTIONARY}


def read_source() -> list[dict[str, Any]]:
    """Every task of the storage data set, oldest first, with its history rows, outputs and metrics."""
    from tasks.models import METRIC_FIELDS, Task, TaskHistory, TaskOutput

    tasks: dict[Any, dict[str, Any]] = {}
    for row in cast("Iterable[Mapping[str, Any]]", Task.objects.values()):  # rows by name: METRIC_FIELDS are names
        metrics = {name: row[name] for name in METRIC_FIELDS}
        figures = any(value not in (None, "") for value in metrics.values())
        tasks[row["id"]] = {**row, "history": [], "outputs": [], "metrics": metrics if figures else None}
    for entry in TaskHistory.objects.order_by("task_id", "seq").values():
        tasks[entry["task_id"]]["history"].append(entry)
    for output in TaskOutput.objects.order_by("task_id", "id").values():
        tasks[output["task_id"]]["outputs"].append(output)
    return sorted(tasks.values(), key=lambda task: (task["created_at"], task["id"]))


def floor_rows(source: list[dict[str, Any]], engine: str, zipped: bool) -> dict[str, list[dict[str, Any]]]:
    """The floor's rows of ``source`` by table, each by column: ``zipped`` deflates JSON and output text where
    that is shorter (SQLite: a BLOB in the same column; PostgreSQL: in the ``_z`` column beside)."""
    from tasks.models import Task

    states, channels, events, output_types = enums()
    labels, principals = Interned(), Interned()
    defaults = {
        field.attname: field.get_default() for field in Task._meta.concrete_fields if field.attname in EXTRA_FIELDS
    }
    tables: dict[str, list[dict[str, Any]]] = {}

    presets = dictionaries()

    def label(text: str | None) -> int | None:
        return labels(text) if text else None

    def text(row: dict[str, Any], column: str, value: str | None) -> None:
        packed = deflated(value, presets.get(column, b"")) if zipped else value
        if engine == "postgres":
            row[f"{column}_z"] = packed if isinstance(packed, bytes) else None
            packed = None if isinstance(packed, bytes) else packed
        row[column] = packed

    for n, task in enumerate(source, start=1):
        metrics = task["metrics"] or {}
        row = {
            "n": n,
            "id": task["id"].bytes if engine == "sqlite" else task["id"],
            "owner": task["owner_id"],
            "state": states.index(task["state"]),
            **{name: label(task[name]) for name in ("handler", "role", "provider", "model")},
            "worker": label(task["worker_id"]),
            "created": micros(task["created_at"]),
            "started": micros(task["started_at"]),
            "completed": micros(task["completed_at"]),
            "attempts": task["attempt_count"],
            "max_attempts": task["max_attempts"],
            "title": task["title"],
            "description": task["description"],
            "processing_time": metrics.get("processing_time_seconds"),
            **{name: metrics.get(name) for name in ("iterations", "prompt_tokens", "completion_tokens", "converged")},
            "stop_reason": label(metrics.get("stop_reason")),
        }
        for name, default in JSON_FIELDS.items():
            text(row, name, compact_json(task[name], default))
        tables.setdefault("task", []).append(row)
        if any(task[name] != defaults[name] for name in EXTRA_FIELDS):
            extra: dict[str, Any] = {"task": n}
            for name in EXTRA_FIELDS:
                value = None if task[name] == defaults[name] else task[name]
                extra[name.removesuffix("_id")] = (
                    micros(value) if isinstance(value, datetime)
                    else compact_json(value) if name == "partial_results"
                    else value
                )  # fmt: skip
            tables.setdefault("task_extra", []).append(extra)
        state_from = ""
        for entry in task["history"]:
            if entry["state_from"] != state_from:
                raise SystemExit(f"task {task['id']} row {entry['seq']}: its state before is not the previous row's")
            change = {
                "task": n,
                "seq": entry["seq"],
                "at": micros(entry["created_at"]),
                "event": events.index(entry["event"]),
                "state": states.index(entry["state_to"]),
                "channel": channels.index(entry["channel"]),
                "actor": principals((entry["actor"], entry["actor_user_id"])),
                "reason": labels(entry["reason"]),
                "key": labels(entry["key_id"]),
                "mac": bytes.fromhex(entry["hash"]),
                "error_message": entry["error_message"] or None,
            }
            text(change, "details", compact_json(entry["details"] or None))
            tables.setdefault("history", []).append(change)
            state_from = entry["state_to"]
        for seq, output in enumerate(task["outputs"], start=1):
            row = {"task": n, "seq": seq, "type": output_types.index(output["output_type"])}
            row["at"] = micros(output["created_at"])
            text(row, "content", output["content"])
            tables.setdefault("output", []).append(row)
            if any(output[name] for name in OUTPUT_FILE_FIELDS):
                file_row = {name: output[name] or None for name in OUTPUT_FILE_FIELDS}
                tables.setdefault("output_file", []).append({"task": n, "seq": seq, **file_row})
    tables["label"] = labels.rows("text")
    tables["principal"] = principals.rows("name", "user_id")
    return tables


@contextmanager
def floor_database(engine: str, name: str) -> Iterator[Any]:
    """A new, empty database ``name`` of ``engine`` holding the floor's schema (a DB-API connection, in
    autocommit), removed afterwards."""
    if engine == "sqlite":
        path = ROOT / "var" / "bench" / f"{name}.sqlite3"
        path.unlink(missing_ok=True)
        lite = sqlite3.connect(path, isolation_level=None)
        try:
            lite.executescript(SQLITE_SCHEMA)
            yield lite
        finally:
            lite.close()
            path.unlink(missing_ok=True)
        return
    import psycopg

    base = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with psycopg.connect(f"{base}/{name}", autocommit=True) as connection:
                connection.execute(POSTGRES_SCHEMA)
                yield connection
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


LOAD_ORDER = ("label", "principal", "task", "task_extra", "history", "output", "output_file")


def load(connection: Any, engine: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Write every row in one transaction, then build the secondary indexes, unique and foreign keys (as the
    data-set builder does: each index sorted once) and the search index, then VACUUM."""
    present = [(table, tables[table]) for table in LOAD_ORDER if tables.get(table)]
    if engine == "sqlite":
        with connection:
            connection.execute("BEGIN")
            for table, rows in present:
                columns = list(rows[0])
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [tuple(row.values()) for row in rows],
                )
            for statement in SQLITE_AFTER_LOAD.strip().splitlines():
                connection.execute(statement)
        connection.execute("VACUUM")
        return
    with connection.transaction(), connection.cursor() as cursor:
        for table, rows in present:
            with cursor.copy(f"COPY {table} ({', '.join(rows[0])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(tuple(row.values()))
        cursor.execute(POSTGRES_AFTER_LOAD)
    connection.execute("VACUUM ANALYZE")


def check(connection: Any, engine: str, source: list[dict[str, Any]]) -> None:
    """Read every task back from the floor and compare what it keeps with the source; recompute every history
    row's MAC with ``tasks.audit.row_hash`` from the floor's columns alone (prev = the previous row's MAC)."""
    from tasks.audit import GENESIS_HASH, row_hash

    states, channels, events, output_types = enums()

    def fetch(sql: str) -> list[dict[str, Any]]:
        cursor = connection.execute(sql)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    presets = dictionaries()

    def text(row: dict[str, Any], column: str) -> Any:
        """A text or JSON column as stored (PostgreSQL's json comes parsed), inflated if deflated."""
        return inflated(row.get(f"{column}_z") or row[column], presets.get(column, b""))

    labels = {row["id"]: row["text"] for row in fetch("SELECT * FROM label")}
    labels[None] = ""
    principals = {row["id"]: (row["name"], row["user_id"]) for row in fetch("SELECT * FROM principal")}
    tasks = fetch("SELECT * FROM task ORDER BY n")
    history: dict[int, list[dict[str, Any]]] = {}
    for row in fetch("SELECT * FROM history ORDER BY task, seq"):
        history.setdefault(row["task"], []).append(row)
    outputs: dict[int, list[dict[str, Any]]] = {}
    for row in fetch("SELECT * FROM output ORDER BY task, seq"):
        outputs.setdefault(row["task"], []).append(row)
    if fetch("SELECT * FROM task_extra") or fetch("SELECT * FROM output_file"):
        raise SystemExit("this check covers tasks with default options and text outputs only")
    if len(tasks) != len(source):
        raise SystemExit(f"the floor holds {len(tasks)} tasks, the source {len(source)}")
    for expected, row in zip(source, tasks, strict=True):
        metrics = expected["metrics"] or {}
        kept = {
            "id": uuid.UUID(bytes=row["id"]) if isinstance(row["id"], bytes) else row["id"],
            "owner_id": row["owner"],
            "state": states[row["state"]],
            **{name: labels[row[name]] for name in ("handler", "role", "provider", "model")},
            "worker_id": labels[row["worker"]],
            "created_at": moment(row["created"]),
            "started_at": moment(row["started"]),
            "completed_at": moment(row["completed"]),
            "attempt_count": row["attempts"],
            "max_attempts": row["max_attempts"],
            "title": row["title"],
            "description": row["description"],
        }
        for name, default in JSON_FIELDS.items():
            document = text(row, name)
            kept[name] = (
                default if document is None else json.loads(document) if isinstance(document, str) else document
            )
        for name, value in kept.items():
            if value != expected[name]:
                raise SystemExit(f"task {expected['id']}: {name} reads back {value!r}, not {expected[name]!r}")
        measured = {
            "processing_time_seconds": row["processing_time"],
            **{name: row[name] for name in ("iterations", "prompt_tokens", "completion_tokens")},
            "stop_reason": labels[row["stop_reason"]],
            "converged": None if row["converged"] is None else bool(row["converged"]),
        }
        if metrics and (
            any(value != metrics[name] for name, value in measured.items())
            or metrics["total_tokens"] != metrics["prompt_tokens"] + metrics["completion_tokens"]
        ):
            raise SystemExit(f"task {expected['id']}: its metrics read back otherwise")
        prev, state_from = GENESIS_HASH, ""
        for entry, stored in zip(expected["history"], history[row["n"]], strict=True):
            rebuilt = {
                "task_id": kept["id"], "seq": stored["seq"], "event": events[stored["event"]],
                "state_from": state_from, "state_to": states[stored["state"]],
                "actor": principals[stored["actor"]][0], "actor_user_id": principals[stored["actor"]][1],
                "channel": channels[stored["channel"]], "reason": labels[stored["reason"]],
                "error_message": stored["error_message"] or "", "created_at": moment(stored["at"]),
                "key_id": labels[stored["key"]],
            }  # fmt: skip
            details = text(stored, "details")
            rebuilt["details"] = (
                {} if details is None else json.loads(details) if isinstance(details, str) else details
            )  # fmt: skip
            link = row_hash(prev, rebuilt)
            if link != bytes(stored["mac"]).hex() or link != entry["hash"]:
                raise SystemExit(f"task {expected['id']} history row {stored['seq']}: its MAC does not recompute")
            prev, state_from = link, rebuilt["state_to"]
        for entry, stored in zip(expected["outputs"], outputs[row["n"]], strict=True):
            read = (output_types[stored["type"]], moment(stored["at"]), text(stored, "content"))
            if read != (entry["output_type"], entry["created_at"], entry["content"]):
                raise SystemExit(f"task {expected['id']}: an output reads back otherwise")


VARIANTS = {"floor": False, "floor + zlib": True}


def measure_floor(engine: str, source: list[dict[str, Any]], zipped: bool) -> dict[str, Any]:
    """Load ``source`` into a new floor database, check it reads back whole, and measure it."""
    vendor = "sqlite" if engine == "sqlite" else "postgresql"
    tables = floor_rows(source, engine, zipped)
    name = f"crux_bench_floor_{len(source)}{'_zlib' if zipped else ''}"
    with floor_database(engine, name) as connection:
        load(connection, engine, tables)
        check(connection, engine, source)
        components, total = storage_components(connection.cursor(), vendor)
    return {"components": components, "total": total, "rows": {table: len(rows) for table, rows in tables.items()}}


def index_bytes(components: list[list[Any]], *, search: bool) -> int:
    """Bytes of the indexes (as ``bench.scale`` counts them), and of SQLite's FTS5 search tables if ``search``."""
    return sum(size for *_names, kind, size in components if kind.endswith("index") or (search and "fts5" in kind))


def report(engine: str, count: int, current: dict[str, Any], floors: dict[str, dict[str, Any]]) -> None:
    """Print bytes per completed task by component of each floor variant, the totals beside the current schema's,
    and the ratios floor / budget and current / floor; record them."""
    rows = floors["floor"]["rows"]
    print(
        f"\nstorage floor — engine {engine}, {count:,} completed tasks ({rows['history']:,} history rows, "
        f"{rows['output']:,} outputs, {rows['label']} labels, {rows['principal']} principals), "
        f"revision {git_revision()}"
    )
    names = list(floors)
    print(f"{'component (bytes per completed task)':<40} {'kind':<12}" + "".join(f"{name:>14}" for name in names))
    sizes: dict[tuple[str, str, str], list[int]] = {}
    for position, floor in enumerate(floors.values()):
        for table, name, kind, size in floor["components"]:
            sizes.setdefault((table, name, kind), [0] * len(floors))[position] = size
    shown = {key: values for key, values in sizes.items() if max(values) >= count}
    weight: dict[str, int] = {}
    for (table, *_rest), values in sizes.items():
        weight[table] = weight.get(table, 0) + values[0]
    # The heaviest tables first, each followed by its indexes.
    ordered = sorted(shown.items(), key=lambda item: (-weight[item[0][0]], item[0][0], item[0][1] != item[0][0]))
    for (table, name, kind), values in ordered:
        label = name if name == table else f"  {name}"
        print(f"{label:<40} {kind:<12}" + "".join(f"{value / count:>14,.0f}" for value in values))
    rest = [
        floor["total"] - sum(values[position] for values in shown.values())
        for position, floor in enumerate(floors.values())
    ]
    print(f"{'everything else (' + str(len(sizes) - len(shown)) + ' components)':<53}" + "".join(
        f"{value / count:>14,.0f}" for value in rest
    ))  # fmt: skip
    print(f"{'total':<53}" + "".join(f"{floor['total'] / count:>14,.0f}" for floor in floors.values()))
    for search in (False, True):
        what = "indexes, search index included" if search else "indexes (as bench.scale counts them)"
        print(f"{what:<53}" + "".join(
            f"{index_bytes(floor['components'], search=search) / floor['total']:>14.1%}" for floor in floors.values()
        ))  # fmt: skip
    tasks = current["rows"]["tasks"]
    current_bytes = current["total"] / tasks
    current_index = index_bytes(current["components"], search=False) / current["total"]
    current_search = index_bytes(current["components"], search=True) / current["total"]
    print(
        f"current schema (the same tasks, the whole database as the floor's): {current_bytes:,.0f} bytes per task, "
        f"indexes {current_index:.1%} ({current_search:.1%} with the search index)"
    )
    for name, floor in floors.items():
        per_task = floor["total"] / count
        share = index_bytes(floor["components"], search=True) / floor["total"]
        print(
            f"{name}: {per_task * 1000 / MB:.3f} MB per 1,000 completed tasks = {per_task / BUDGET_BYTES:.2f} of "
            f"the 1 MB budget; current / {name} = {current_bytes / per_task:.2f}"
        )
        record(
            "storage floor", f"{name}: size per 1,000 completed tasks", engine=engine, size=count,
            value=per_task * 1000 / MB, unit="MB", ratio=current_bytes / per_task,
            goal="≤ 1 MB (ratio = current / floor)", met=per_task <= BUDGET_BYTES,
        )  # fmt: skip
        record(
            "storage floor", f"{name}: index share, search index included", engine=engine, size=count,
            value=share * 100, unit="%", goal=f"< {INDEX_SHARE_GOAL:.0%}", met=share < INDEX_SHARE_GOAL,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=10_000, help="completed tasks (bench.scale's --storage-tasks)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the storage data set")
    args = parser.parse_args()
    current = run_child(argparse.Namespace(engine=args.engine, fresh=args.fresh), "--child-storage", str(args.tasks))
    with written_tasks(args.engine, args.tasks):
        source = read_source()
    floors = {name: measure_floor(args.engine, source, zipped) for name, zipped in VARIANTS.items()}
    report(args.engine, len(source), current, floors)


if __name__ == "__main__":
    main()
