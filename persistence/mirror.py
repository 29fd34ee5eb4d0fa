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

import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import RedisError

from tasks.states import is_terminal

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

# Compare-and-write in one round trip. ARGV[1] = "write" or "check"; then for
# each i: KEYS[i] = key, ARGV[3i-1..3i+1] = payload, version, ttl seconds (0 = none).
# Returns one status digit per key: 0 same, 1 missing, 2 stale, 3 stored one is newer.
# Missing and stale entries are written in "write" mode; a newer entry is never replaced.
_SYNC = """
local statuses = {}
for i, key in ipairs(KEYS) do
    local payload, version, ttl = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
    local current = redis.call('GET', key)
    local status = 1
    if current == payload then
        status = 0
    elseif current then
        status = 2
        local ok, decoded = pcall(cjson.decode, current)
        if ok and type(decoded) == 'table' and tonumber(decoded['version']) ~= nil
                and tonumber(decoded['version']) > version then
            status = 3
        end
    end
    if ARGV[1] == 'write' and (status == 1 or status == 2) then
        if ttl > 0 then
            redis.call('SET', key, payload, 'EX', ttl)
        else
            redis.call('SET', key, payload)
        end
    end
    statuses[i] = status
end
return table.concat(statuses)
"""
MISSING, STALE = "1", "2"


def client() -> Redis:
    return get_redis_connection("default")


def key_prefix() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:task:"


def task_key(task_id: Any) -> str:
    return f"{key_prefix()}{task_id}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_of(updated_at: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding), as the entry's version."""
    return (updated_at - _EPOCH) // timedelta(microseconds=1)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def snapshot(values: dict[str, Any]) -> dict[str, Any]:
    """The mirror document of a task, from a dict with MIRRORED_FIELDS (``values()`` row)."""
    doc = {name: values[name] for name in MIRRORED_FIELDS}
    doc["id"] = str(doc["id"])
    for name in ("created_at", "updated_at", "started_at", "completed_at", "deleted_at"):
        doc[name] = _iso(doc[name])
    doc["version"] = version_of(values["updated_at"])
    return doc


def snapshot_of(task: Any) -> dict[str, Any]:
    return snapshot({name: getattr(task, name) for name in MIRRORED_FIELDS})


def encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _ttl(doc: dict[str, Any]) -> int:
    return settings.MIRROR_TERMINAL_TTL if is_terminal(doc["state"]) else 0


def publish(doc: dict[str, Any]) -> bool:
    """Write one task's mirror entry unless a newer one is there; False on Redis failure."""
    try:
        sync(client(), [doc])
    except RedisError as exc:
        MIRROR_FAILURES.labels("write").inc()
        logger.warning("mirror write of task %s failed (SQL stays authoritative): %s", doc["id"], exc)
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


def sync(conn: Redis, docs: list[dict[str, Any]], *, write: bool = True) -> str:
    """Compare entries with ``docs`` (and write the missing and stale ones); one status digit per doc."""
    args: list[Any] = ["write" if write else "check"]
    for doc in docs:
        args.extend((encode(doc), doc["version"], _ttl(doc)))
    statuses = conn.register_script(_SYNC)(keys=[task_key(doc["id"]) for doc in docs], args=args)
    return statuses.decode() if isinstance(statuses, bytes) else str(statuses)


def fetch(task_id: Any) -> dict[str, Any] | None:
    """The mirror entry of a task, or None on a miss. Raises RedisError for callers to count."""
    raw = client().get(task_key(task_id))
    return None if raw is None else json.loads(raw)


def scan_task_ids(conn: Redis) -> Iterator[str]:
    prefix = key_prefix()
    for key in conn.scan_iter(match=f"{prefix}*", count=1000):
        yield (key.decode() if isinstance(key, bytes) else key)[len(prefix) :]


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
