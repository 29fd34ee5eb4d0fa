"""The Redis mirror of task state: fast reads, never a store of record.

Each task is one JSON string at ``{REDIS_KEY_PREFIX}:task:{id}``. Writes are
versioned (the task's ``updated_at`` in microseconds) and applied by a Lua
compare-and-set, so a late writer never replaces newer state with older. Live
tasks have no TTL; finished ones expire after ``MIRROR_TERMINAL_TTL`` and are
rebuilt from SQL on the next read. Every Redis failure is logged and counted,
never raised: SQL has the truth and the mirror heals on the next write, read or
reconcile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django_redis import get_redis_connection
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import NoScriptError, RedisError

from tasks.models import Task, epoch_microseconds
from tasks.states import TERMINAL_STATES

logger = logging.getLogger(__name__)

MIRROR_FAILURES = Counter(
    "crux_mirror_failures_total", "Redis mirror operations that failed (SQL stayed authoritative)", ["operation"]
)
MIRROR_READS = Counter("crux_mirror_reads_total", "Status reads by where they were served from", ["source"])

# Fields of a task that the mirror carries (its live state, not its payloads).
MIRRORED_FIELDS = (
    "id",
    "title",
    "state",
    "owner_id",
    "role",
    "provider",
    "progress",
    "current_phase",
    "attempt_count",
    "max_attempts",
    "last_error",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "deleted_at",
)

# Compare-and-write in one round trip. KEYS = the entries' keys (distinct);
# ARGV[1] = "write" or "check", ARGV[2] = the TTL of finished tasks' entries,
# ARGV[3] = one digit per key, "1" if its entry gets that TTL, ARGV[3 + i] = the
# payload of KEYS[i]. Returns one status digit per key: 0 same, 1 missing, 2 stale,
# 3 stored one is newer. Missing and stale entries are written in "write" mode; a
# newer entry is never replaced. Per chunk of keys, entries are read with one MGET
# and those without a TTL written with one MSET (the script runs atomically, so this
# is the per-key GET-compare-SET with two commands a chunk); chunks keep unpack()
# within Lua's stack limit. One argument per entry, not three: Redis copies and Lua
# interns every argument, which is most of the script's time. Versions are read
# from the JSON text, not decoded: documents are flat and a quote inside a string
# is escaped, so '"version":' can only be the key.
_SYNC = """
local write, ttl, expiring = ARGV[1] == 'write', ARGV[2], ARGV[3]
local statuses, n = {}, #KEYS
for first = 1, n, 1000 do
    local last = math.min(first + 999, n)
    local stored = redis.call('MGET', unpack(KEYS, first, last))
    local plain = {}
    for i = first, last do
        local payload, current, status = ARGV[3 + i], stored[i - first + 1], 1
        if current == payload then
            status = 0
        elseif current then
            status = 2
            local held = tonumber(string.match(current, '"version"%s*:%s*(%-?%d+)'))
            local incoming = tonumber(string.match(payload, '"version":(%-?%d+)'))
            if held and incoming and held > incoming then
                status = 3
            end
        end
        if write and (status == 1 or status == 2) then
            if string.byte(expiring, i) == 49 then
                redis.call('SET', KEYS[i], payload, 'EX', ttl)
            else
                plain[#plain + 1] = KEYS[i]
                plain[#plain + 1] = payload
            end
        end
        statuses[i] = status
    end
    if #plain > 0 then
        redis.call('MSET', unpack(plain))
    end
end
return table.concat(statuses)
"""
_SYNC_SHA = hashlib.sha1(_SYNC.encode()).hexdigest()
MISSING, STALE = "1", "2"


def client() -> Redis:
    return get_redis_connection("default")


def key_prefix() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:task:"


def task_key(task_id: Any) -> str:
    return f"{key_prefix()}{task_id}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def snapshot(values: dict[str, Any]) -> dict[str, Any]:
    """The mirror document of a task, from a dict with MIRRORED_FIELDS (``values()`` row)."""
    doc = {name: values[name] for name in MIRRORED_FIELDS}
    doc["id"] = str(doc["id"])
    for name in ("created_at", "updated_at", "started_at", "completed_at", "deleted_at"):
        doc[name] = _iso(doc[name])
    doc["version"] = epoch_microseconds(values["updated_at"])  # the entry's version
    return doc


def snapshot_of(task: Any) -> dict[str, Any]:
    return snapshot({name: getattr(task, name) for name in MIRRORED_FIELDS})


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(doc: dict[str, Any]) -> bytes:
    """The stored form of a document: sorted keys, no spaces, ASCII (``\\u`` escapes).

    The bytes are those of ``json.dumps(doc, sort_keys=True, separators=(",", ":"))``,
    which the script compares to tell "same" from "stale", so entries written before
    and after a change of encoder compare equal. orjson writes the same bytes, about
    ten times faster, unless the text has non-ASCII characters or DEL (orjson writes
    them raw), the progress is a float that ``repr`` writes with an exponent (below
    1e-4) or not finite, or a string is not valid Unicode: those go through ``json``.
    Datetimes may be ISO strings or datetime objects (naive ones are UTC).
    """
    progress = doc["progress"]
    if progress == 0 or 1e-4 <= abs(progress) < 1e16:
        try:
            out = orjson.dumps(doc, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            pass
        else:
            if out.isascii() and b"\x7f" not in out:
                return out
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def refresh(doc: dict[str, Any]) -> bool:
    """Write one task's mirror entry unless a newer one is there; False on Redis failure."""
    return refresh_all([doc])


def refresh_all(docs: list[dict[str, Any]]) -> bool:
    """Write the tasks' mirror entries (one round trip), each unless a newer one is there; False on Redis failure."""
    try:
        sync(client(), docs)
    except RedisError as exc:
        MIRROR_FAILURES.labels("write").inc()
        names = docs[0]["id"] if len(docs) == 1 else f"{docs[0]['id']} and {len(docs) - 1} more"
        logger.warning("mirror write of task %s failed (SQL stays authoritative): %s", names, exc)
        return False
    return True


def forget(task_id: Any) -> bool:
    """Drop a task's entry (the task itself left SQL through a retention purge)."""
    try:
        client().delete(task_key(task_id))
    except RedisError as exc:
        MIRROR_FAILURES.labels("delete").inc()
        logger.warning("mirror delete of task %s failed (reconcile removes the orphan): %s", task_id, exc)
        return False
    return True


class Batch(NamedTuple):
    """Entries ready for the compare-and-write script, in one order: task ids, keys, payloads."""

    ids: list[str]
    keys: list[str]
    payloads: list[bytes]
    expiring: str  # one digit per entry: "1" if it gets MIRROR_TERMINAL_TTL (a finished task's)


def _expiring(states: Iterable[str]) -> str:
    """One digit per state: "1" if the entry expires (a finished task's, when MIRROR_TERMINAL_TTL is set)."""
    expire = settings.MIRROR_TERMINAL_TTL > 0
    return "".join("1" if expire and state in TERMINAL_STATES else "0" for state in states)


def batch_of_docs(docs: Iterable[dict[str, Any]]) -> Batch:
    """A batch from mirror documents (``snapshot()``)."""
    docs = list(docs)
    prefix = key_prefix()
    return Batch(
        [doc["id"] for doc in docs],
        [prefix + doc["id"] for doc in docs],
        [encode(doc) for doc in docs],
        _expiring(doc["state"] for doc in docs),
    )


_ID, _STATE, _UPDATED_AT = (MIRRORED_FIELDS.index(name) for name in ("id", "state", "updated_at"))
# SQLite holds a task's state as its code (``tasks.models.CodedChoiceField``), which the raw rows give.
_STATE_FIELD = Task._meta.get_field("state")


def batch_of_rows(rows: Sequence[Sequence[Any]]) -> Batch:
    """A batch from database rows of MIRRORED_FIELDS as the driver returns them (see ``raw_rows``).

    The same entries as ``batch_of_docs`` of their snapshots, without building each
    snapshot: the driver's values go to the encoder as they are. SQLite gives the id
    as its 16 bytes (``tasks.models.CompactUUIDField``; 32 hex digits in a database
    not yet migrated), naive datetimes (UTC: USE_TZ is on) and the state's code;
    PostgreSQL, through ``raw_rows``, the id's text, aware datetimes and the state.
    """
    ids: list[str] = []
    states: list[str] = []
    payloads: list[bytes] = []
    for row in rows:
        doc = dict(zip(MIRRORED_FIELDS, row, strict=True))
        task_id = row[_ID]
        if type(task_id) is bytes:
            doc["id"] = task_id = str(UUID(bytes=task_id))
        elif type(task_id) is not str:
            doc["id"] = task_id = str(task_id)
        elif len(task_id) == 32:
            doc["id"] = task_id = f"{task_id[:8]}-{task_id[8:12]}-{task_id[12:16]}-{task_id[16:20]}-{task_id[20:]}"
        doc["state"] = state = _STATE_FIELD.from_db_value(row[_STATE], None, None)
        doc["version"] = epoch_microseconds(row[_UPDATED_AT])
        ids.append(task_id)
        states.append(state)
        payloads.append(encode(doc))
    prefix = key_prefix()
    return Batch(ids, [prefix + task_id for task_id in ids], payloads, _expiring(states))


def raw_rows(query: QuerySet, size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a ``values_list()`` query, ``size`` at a time, without the ORM's per-value converters.

    What iterating the query does (a server-side cursor where the database has one
    and allows it), minus turning each value into its Python type, which cost more
    than everything else in a mirror rebuild; ``batch_of_rows`` takes these rows.
    On PostgreSQL, UUIDs are read as their text (what ``str()`` of the UUID gives)
    and timestamps by psycopg's C loader: Django's subclasses the pure-Python one
    (which made the whole read about seven times slower) only to set the time zone
    that Django has already made the session's, which the C loader uses.
    """
    connection = connections[query.db]
    sql, params = query.query.sql_with_params()
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg.types.datetime import TimestamptzLoader
            from psycopg.types.string import TextLoader

            cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
            cursor.cursor.adapters.register_loader("uuid", TextLoader)
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(size):
            yield rows


def apply(conn: Redis, batch: Batch, *, write: bool = True) -> str:
    """Compare a batch's entries with Redis (and write the missing and stale ones); one status digit each."""
    if not batch.keys:
        return ""
    args = (*batch.keys, "write" if write else "check", settings.MIRROR_TERMINAL_TTL, batch.expiring, *batch.payloads)
    try:
        statuses = conn.evalsha(_SYNC_SHA, len(batch.keys), *args)
    except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / a restart
        conn.script_load(_SYNC)
        statuses = conn.evalsha(_SYNC_SHA, len(batch.keys), *args)
    return statuses.decode() if isinstance(statuses, bytes) else str(statuses)


def sync(conn: Redis, docs: list[dict[str, Any]], *, write: bool = True) -> str:
    """Compare entries with ``docs`` (and write the missing and stale ones); one status digit per doc."""
    return apply(conn, batch_of_docs(docs), write=write)


def fetch(task_id: Any) -> dict[str, Any] | None:
    """The mirror entry of a task, or None on a miss. Raises RedisError for callers to count."""
    raw = client().get(task_key(task_id))
    return None if raw is None else json.loads(raw)


def scan_task_ids(conn: Redis, *, skip: Collection[str] = frozenset()) -> Iterator[str]:
    """Ids of the tasks that have an entry, except those whose key is in ``skip``.

    A page of up to 10,000 keys per SCAN, filtered with one set difference: after a
    rebuild, every key is usually one the rebuild just wrote.
    """
    prefix = key_prefix()
    cursor = None
    while cursor != 0:
        cursor, keys = conn.scan(cursor or 0, match=f"{prefix}*", count=10_000)
        names = {k.decode() if isinstance(k, bytes) else k for k in keys}
        for key in names.difference(skip):
            yield key[len(prefix) :]


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
