"""The only ways a task's rows leave or come back whole: erased by a purge, reinstated from its archive, loaded
from a backup."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from django.db import connection, models, transaction

from tasks import db_triggers, keys
from tasks.audit import HASHED_FIELDS, Actor, HistoryEvent, audited, loading_rows
from tasks.exceptions import TaskError
from tasks.history import resign_legacy_chain
from tasks.ids import TaskId, parse_task_id
from tasks.models import HistoryPurgeGrant, Task, TaskHistory, TaskMetrics, TaskOutput
from tasks.records import deserialize
from tasks.redaction import redact_fields


def erase_tasks(task_ids: Sequence[TaskId], *, batch_size: int = 500) -> int:
    """Remove whole tasks with their history, outputs and metrics; returns how many.

    The narrow hook past the append-only history triggers: each task gets a
    HistoryPurgeGrant, signed with the grant key, for the length of the
    transaction (``tasks.db_triggers``). Only the retention purge calls this,
    after it has archived the tasks and written their ledger rows.
    """
    erased = 0
    for start in range(0, len(task_ids), batch_size):
        ids = [parse_task_id(t) for t in task_ids[start : start + batch_size]]
        with transaction.atomic():
            db_triggers.admit_purge(connection)
            HistoryPurgeGrant.objects.filter(task_id__in=ids).delete()
            HistoryPurgeGrant.objects.bulk_create([_signed_grant(i) for i in ids])
            models.QuerySet.delete(TaskHistory.objects.filter(task_id__in=ids))
            TaskOutput.objects.filter(task_id__in=ids).delete()
            TaskMetrics.objects.filter(task_id__in=ids).delete()
            erased += models.QuerySet.delete(Task.objects.filter(pk__in=ids))[1].get(Task._meta.label, 0)
            HistoryPurgeGrant.objects.filter(task_id__in=ids).delete()
    return erased


def _signed_grant(task_id: UUID) -> HistoryPurgeGrant:
    nonce = secrets.token_hex(16)
    return HistoryPurgeGrant(task_id=task_id, nonce=nonce, mac=keys.grant_mac(task_id, nonce))


def reinstate(
    entry: Mapping[str, Any], *, history_head: tuple[int, str], actor: Actor, channel: str, reason: str
) -> Task:
    """Put an erased task back exactly as it was archived (task, history, outputs, metrics), then record it.

    ``entry`` is one task's archived rows (``tasks.records.task_entries``). The
    rows are inserted as they were, so no history is invented and the chain still
    verifies; ``history_head`` (count, hash) must match the archived chain's end
    (an archive of the unkeyed era is re-signed if it verifies up to that head).
    One new history row, event ``unarchive``, says who brought it back and why.
    Runs inside the caller's transaction.
    """
    rows = [entry["task"], *entry["history"], *entry["outputs"]]
    if entry["metrics"]:
        rows.append(entry["metrics"])
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for item in deserialize(rows):
        redact_fields(item.object)  # bulk_create sends no pre_save: an archive's rows are redacted here
        by_model.setdefault(type(item.object), []).append(item.object)
    archived = by_model[Task][0]
    assert isinstance(archived, Task)  # an entry's first row is its task
    if (archived.history_count, archived.history_head) != tuple(history_head):
        raise TaskError(f"archive of task {archived.pk} does not match its ledger entry (history head differs)")
    _resign_if_unkeyed(archived, by_model.get(TaskHistory, []), history_head)
    for model in (Task, TaskHistory, TaskOutput, TaskMetrics):
        if model in by_model:
            models.QuerySet.bulk_create(model._base_manager.all(), by_model[model])
    task = Task.objects.select_for_update().get(pk=archived.pk)
    with audited(actor, channel=channel, reason=reason, event=HistoryEvent.UNARCHIVE):
        task.save()
    return task


def _resign_if_unkeyed(task: Task, rows: list[Any], head: tuple[int, str]) -> None:
    """History archived before the chain was keyed: re-sign it, if it verifies up to the (signed) ledger's head."""
    if all(row.key_id for row in rows):
        return
    fields = (*HASHED_FIELDS, "prev_hash", "hash")
    signed = resign_legacy_chain([{name: getattr(row, name) for name in fields} for row in rows], head)
    if signed is None:
        raise TaskError(f"the archived history of task {task.pk} does not verify: not restoring it")
    for row, new in zip(rows, signed, strict=True):
        row.key_id, row.prev_hash, row.hash = new["key_id"], new["prev_hash"], new["hash"]
    task.history_head = signed[-1]["hash"]


def load_rows(rows: Iterable[dict[str, Any]]) -> int:
    """Save rows of a backup (``tasks.records`` form, any model) exactly as they were; returns how many.

    Their history comes with them, so none is written; only a backup load into an
    empty database calls this, inside its transaction.
    """
    loaded = 0
    with loading_rows():
        for item in deserialize(rows):
            item.save()
            loaded += 1
    return loaded
