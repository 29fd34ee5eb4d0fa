"""Task records written out and read back exactly: the rows of backups, purge archives and exports.

Django's JSON serializer truncates datetimes to milliseconds, which would break
the history hash chain on the way back; this keeps every value exact (full
ISO timestamps, UUIDs and decimals as strings) and loads rows back in bulk.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from django.core import serializers
from django.db import models

from tasks.models import Task, TaskHistory, TaskOutput


def _default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def encode(obj: Any) -> str:
    return json.dumps(obj, default=_default, sort_keys=True, ensure_ascii=False)


def serialize(objects: Iterable[models.Model], *, natural: bool = False) -> list[dict[str, Any]]:
    """Objects as ``{"model", "pk", "fields"}`` dicts with exact values."""
    return serializers.serialize("python", objects, use_natural_foreign_keys=natural)


def serialize_queryset(queryset: models.QuerySet, *, chunk_size: int = 2000, natural: bool = False) -> Iterator[dict]:
    batch: list[models.Model] = []
    for obj in queryset.order_by("pk").iterator(chunk_size=chunk_size):
        batch.append(obj)
        if len(batch) >= chunk_size:
            yield from serialize(batch, natural=natural)
            batch = []
    if batch:
        yield from serialize(batch, natural=natural)


# Fields a model no longer stores because they are derived: dropped from the rows of older backups and purge archives
# as they are read back (a history row's prev_hash is the hash of the row before it).
RETIRED_FIELDS: dict[str, frozenset[str]] = {
    "tasks.taskhistory": frozenset({"prev_hash"}),
    "tasks.task": frozenset({"celery_task_id"}),  # derived from the id and the publish count since
}


# A task's metrics had a table of their own until they became columns of its row: a row of that model, in an older
# backup or purge archive, is folded into its task's row as it is read back.
RETIRED_METRICS_MODEL = "tasks.taskmetrics"


def retired_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The figures a retired metrics row held, its stamp dropped (the task's own ``updated_at`` stands). A name the
    task has no column for is refused where the figures are written, as any task field is."""
    return {name: value for name, value in row["fields"].items() if name != "updated_at"}


def with_retired_metrics(task_row: dict[str, Any], metrics_row: dict[str, Any] | None) -> dict[str, Any]:
    """A serialized task row with the figures of its retired metrics row (an entry of an older archive) in it."""
    if metrics_row is None:
        return task_row
    return {**task_row, "fields": {**task_row["fields"], **retired_metrics(metrics_row)}}


def current_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A serialized row without the fields its model retired (``RETIRED_FIELDS``); any other field is kept, so an
    unknown one is still refused."""
    retired = RETIRED_FIELDS.get(row["model"])
    if not retired or retired.isdisjoint(row["fields"]):
        return row
    return {**row, "fields": {name: value for name, value in row["fields"].items() if name not in retired}}


def deserialize(rows: Iterable[dict[str, Any]]) -> Iterator[serializers.base.DeserializedObject]:
    return serializers.deserialize("python", map(current_fields, rows), handle_forward_references=False)


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def task_entries(task_ids: list[UUID]) -> Iterator[dict[str, Any]]:
    """Each task (its metrics in its row) with its history and outputs, as one exact, self-contained entry."""
    tasks = {t.pk: t for t in Task.objects.filter(pk__in=task_ids)}
    history: dict[UUID, list] = {}
    for row in TaskHistory.objects.filter(task_id__in=task_ids).order_by("task_id", "seq"):
        history.setdefault(row.task_id, []).append(row)
    outputs: dict[UUID, list] = {}
    for out in TaskOutput.objects.filter(task_id__in=task_ids).order_by("task_id", "id"):
        outputs.setdefault(out.task_id, []).append(out)
    for pk in task_ids:
        if pk not in tasks:
            continue
        yield {
            "task": serialize([tasks[pk]])[0],
            "history": serialize(history.get(pk, [])),
            "outputs": serialize(outputs.get(pk, [])),
        }


# The columns of a CSV export (``export --format csv``, the admin's "Export selected as CSV").
CSV_FIELDS = (
    "id", "title", "description", "role", "state", "handler", "provider", "model", "owner", "created_at",
    "updated_at", "started_at", "completed_at", "attempt_count", "max_attempts", "error_count", "last_error",
    "progress", "current_phase", "deleted_at", "deleted_by", "delete_reason",
)  # fmt: skip


def csv_row(task: Task) -> list[Any]:
    """``task`` as one CSV row of ``CSV_FIELDS``: users by name, times in ISO 8601, None as empty."""
    return [_csv_cell(task, name) for name in CSV_FIELDS]


def _csv_cell(task: Task, name: str) -> Any:
    value = getattr(task, name)
    if name in ("owner", "deleted_by"):
        return value.get_username() if value else ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return "" if value is None else value
