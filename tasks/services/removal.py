"""The only ways a task's rows leave or come back whole: erased by a purge, reinstated from its archive, loaded
from a backup."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import NoneType
from typing import Any
from uuid import UUID

from django.apps import apps
from django.core.serializers.base import DeserializationError, deserialize_fk_value
from django.db import connection, models, transaction

from tasks import db_triggers, keys
from tasks.audit import HASHED_FIELDS, Actor, HistoryEvent, audited, loading_rows
from tasks.exceptions import TaskError
from tasks.history import insert_rows, resign_legacy_chain
from tasks.ids import TaskId, parse_task_id
from tasks.models import HistoryPurgeGrant, Task, TaskHistory, TaskOutput
from tasks.records import RETIRED_METRICS_MODEL, current_fields, deserialize, retired_metrics, with_retired_metrics
from tasks.redaction import REDACTED_APPS, redact_fields
from tasks.selectors import count_history_by_kind
from tasks.services.attempts import checked_metrics
from tasks.services.tally import add_to_tally, locked_mark


def erase_tasks(task_ids: Sequence[TaskId], *, batch_size: int = 500) -> int:
    """Remove whole tasks with their history and outputs; returns how many.

    The narrow hook past the append-only history triggers: each task gets a
    HistoryPurgeGrant, signed with the grant key, for the length of the
    transaction (``tasks.db_triggers``). Only the retention purge calls this,
    after it has archived the tasks and written their ledger rows.
    """
    erased = 0
    for start in range(0, len(task_ids), batch_size):
        ids = [parse_task_id(t) for t in task_ids[start : start + batch_size]]
        with transaction.atomic():
            _untally(ids)
            db_triggers.admit_purge(connection)
            HistoryPurgeGrant.objects.filter(task_id__in=ids).delete()
            HistoryPurgeGrant.objects.bulk_create([_signed_grant(i) for i in ids])
            models.QuerySet.delete(TaskHistory.objects.filter(task_id__in=ids))
            TaskOutput.objects.filter(task_id__in=ids).delete()
            erased += models.QuerySet.delete(Task.objects.filter(pk__in=ids))[1].get(Task._meta.label, 0)
            HistoryPurgeGrant.objects.filter(task_id__in=ids).delete()
    return erased


def _untally(task_ids: list[UUID]) -> None:
    """Take the tasks' history rows under the tally's mark off the tally, before they are erased."""
    mark = locked_mark()
    if mark.upto:
        add_to_tally(count_history_by_kind(task_ids, upto=mark.upto), sign=-1)


def _signed_grant(task_id: UUID) -> HistoryPurgeGrant:
    nonce = secrets.token_hex(16)
    return HistoryPurgeGrant(task_id=task_id, nonce=nonce, mac=keys.grant_mac(task_id, nonce))


def reinstate(
    entry: Mapping[str, Any], *, history_head: tuple[int, str], actor: Actor, channel: str, reason: str
) -> Task:
    """Put an erased task back exactly as it was archived (task, history, outputs), then record it.

    ``entry`` is one task's archived rows (``tasks.records.task_entries``). The
    rows are inserted as they were, so no history is invented and the chain still
    verifies; ``history_head`` (count, hash) must match the archived chain's end
    (an archive of the unkeyed era is re-signed if it verifies up to that head).
    One new history row, event ``unarchive``, says who brought it back and why.
    Runs inside the caller's transaction.
    """
    rows = [with_retired_metrics(entry["task"], entry.get("metrics")), *entry["history"], *entry["outputs"]]
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for item in deserialize(rows):
        redact_fields(item.object)  # bulk_create sends no pre_save: an archive's rows are redacted here
        by_model.setdefault(type(item.object), []).append(item.object)
    archived = by_model[Task][0]
    assert isinstance(archived, Task)  # an entry's first row is its task
    if (archived.history_count, archived.history_head) != tuple(history_head):
        raise TaskError(f"archive of task {archived.pk} does not match its ledger entry (history head differs)")
    _resign_if_unkeyed(archived, by_model.get(TaskHistory, []), history_head)
    mark = locked_mark()
    for model in (Task, TaskHistory, TaskOutput):
        if model in by_model:
            models.QuerySet.bulk_create(model._base_manager.all(), by_model[model])
    if mark.upto:  # its rows keep their ids: those under the mark are the tally's again
        add_to_tally(count_history_by_kind([archived.pk], upto=mark.upto))
    task = Task.objects.select_for_update().get(pk=archived.pk)
    with audited(actor, channel=channel, reason=reason, event=HistoryEvent.UNARCHIVE):
        task.save()
    return task


def _resign_if_unkeyed(task: Task, rows: list[Any], head: tuple[int, str]) -> None:
    """History archived before the chain was keyed: re-sign it, if it verifies up to the (signed) ledger's head."""
    if all(row.key_id for row in rows):
        return
    fields = (*HASHED_FIELDS, "hash")
    signed = resign_legacy_chain([{name: getattr(row, name) for name in fields} for row in rows], head)
    if signed is None:
        raise TaskError(f"the archived history of task {task.pk} does not verify: not restoring it")
    for row, new in zip(rows, signed, strict=True):
        row.key_id, row.hash = new["key_id"], new["hash"]
    task.history_head = signed[-1]["hash"]


def load_rows(lines: Iterable[str], *, batch_size: int = 1000) -> int:
    """Save the rows of a backup (JSON lines, ``tasks.records`` form, any model) exactly as they were; returns how
    many.

    Their history comes with them, so none is written; only a backup load into an
    empty database calls this, inside its transaction. A row at a time, a million
    tasks took the best part of an hour: here forked processes turn batches of lines
    into column values (``_convert``) while this one inserts them, each run of one
    model's rows in one statement (``executemany``; ``COPY`` on PostgreSQL). Bulk
    inserts send no signal: each row is redacted as ``pre_save`` would, and the Redis
    mirror is left to ``reconcile``. Rows of a model with many-to-many fields (users,
    groups) or of a proxy (whose rows are its concrete model's) are deserialized and
    saved here, one by one, in their place. A retired metrics row (an older backup's) sets its task's figures.
    """
    loaded = 0
    db = transaction.get_connection()
    with loading_rows(), _in_workers(_convert, _batches(lines, batch_size)) as converted:
        for segments in converted:
            for label, params, rows in segments:
                if label == RETIRED_METRICS_MODEL:
                    assert rows is not None  # _segment leaves a retired model's rows as they are
                    for row in rows:
                        Task.objects.filter(pk=parse_task_id(row["pk"])).update(**checked_metrics(retired_metrics(row)))
                    loaded += len(rows)
                elif rows is not None:
                    for item in deserialize(rows):
                        item.save()
                    loaded += len(rows)
                else:
                    model = apps.get_model(label)
                    insert_rows(db, model, model._meta.concrete_fields, params)
                    loaded += len(params)
    return loaded


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def _in_workers(function: Callable[[list[str]], Any], batches: Iterator[list[str]]) -> Iterator[Iterator[Any]]:
    """``function`` of each batch, in order, computed by forked processes (one per core, two at most: this one has the
    inserts to do). They never use the database connection they inherit, and end without closing it."""
    with multiprocessing.get_context("fork").Pool(max(1, min(2, os.cpu_count() or 1))) as pool:
        yield pool.imap(function, batches)


def _convert(lines: list[str]) -> list[tuple[str, list[list[Any]] | None, list[dict[str, Any]] | None]]:
    """Lines of a backup as runs of one model's rows: (model label, column values of each row, None), or (label, None,
    the rows themselves) for a model whose rows are saved one by one (``load_rows``)."""
    segments: list[tuple[str, list[list[Any]] | None, list[dict[str, Any]] | None]] = []
    run: list[dict[str, Any]] = []
    for row in map(current_fields, map(json.loads, lines)):
        if run and row["model"] != run[0]["model"]:
            segments.append(_segment(run))
            run = []
        run.append(row)
    if run:
        segments.append(_segment(run))
    return segments


def _segment(rows: list[dict[str, Any]]) -> tuple[str, list[list[Any]] | None, list[dict[str, Any]] | None]:
    label = rows[0]["model"]
    if label == RETIRED_METRICS_MODEL:
        return label, None, rows
    model = apps.get_model(label)
    if model._meta.proxy or model._meta.many_to_many:
        return label, None, rows
    return label, _column_values(model, rows), None


def _column_values(model: type[models.Model], rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Each serialized row's column values as they were: read as Django's deserializer reads them (``to_python``), the
    row redacted, written as a raw save writes them (``get_db_prep_save``: no ``auto_now`` stamp). A value JSON
    already gives in its column's type (text, numbers, booleans, null in plain columns) is the same after both and
    goes as it is: most values, half the time. Only the connection's operations are used, never a query."""
    db = transaction.get_connection()
    fields = model._meta.concrete_fields
    names = {field.name for field in fields}
    columns = [(field, _PLAIN.get(type(field), ())) for field in fields]
    objects = []
    for row in rows:
        values = row["fields"]
        if not names.issuperset(values):
            raise DeserializationError(f"{row['model']} {row.get('pk')}: no field {sorted(values.keys() - names)}")
        objects.append(model(*(_python_value(db, field, types, row, values) for field, types in columns)))
    if model._meta.app_label in REDACTED_APPS:
        for obj in objects:
            redact_fields(obj)
    params = []
    for obj in objects:
        row_params = []
        for field, types in columns:
            value = getattr(obj, field.attname)
            row_params.append(value if type(value) in types else field.get_db_prep_save(value, db))
        params.append(row_params)
    return params


# The columns whose values JSON gives as they are stored, and those values' types.
_PLAIN = {
    models.CharField: (str, NoneType),
    models.TextField: (str, NoneType),
    models.SlugField: (str, NoneType),
    models.EmailField: (str, NoneType),
    models.IntegerField: (int, NoneType),
    models.BigIntegerField: (int, NoneType),
    models.SmallIntegerField: (int, NoneType),
    models.PositiveIntegerField: (int, NoneType),
    models.PositiveBigIntegerField: (int, NoneType),
    models.PositiveSmallIntegerField: (int, NoneType),
    models.AutoField: (int,),
    models.BigAutoField: (int,),
    models.BooleanField: (bool, NoneType),
    models.FloatField: (float, NoneType),
}


def _python_value(db: Any, field: Any, plain: tuple[type, ...], row: dict[str, Any], values: dict[str, Any]) -> Any:
    if field.primary_key:
        value = row.get("pk")
    elif field.name in values:
        value = values[field.name]
    else:
        return field.get_default()
    if type(value) in plain:
        return value
    if field.remote_field is not None:
        return deserialize_fk_value(field, value, db.alias, False)
    return field.to_python(value)
