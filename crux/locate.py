"""Forensics: "what happened to task X?" answered from every store, verdict first.

A task gone from SQL without a validly signed tombstone is looked up in the newest signed audit checkpoint
(``tasks.checkpoints``), the Redis mirror and Celery's results: if any of them saw it, it was stored, and the
verdict says so (possible tampering) instead of "never existed".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.db.models import Q
from django_celery_results.models import TaskResult
from redis.exceptions import RedisError

from persistence import mirror
from retention.models import PurgeLedger
from tasks import checkpoints
from tasks.audit import HistoryEvent
from tasks.ids import celery_id, parse_task_id
from tasks.models import Task, TaskHistory
from tasks.records import checksum
from tasks.tasks import current_delivery_meta

_HISTORY_FIELDS = ("seq", "created_at", "event", "state_from", "state_to", "actor", "channel", "reason")


@dataclass
class Location:
    """Where a task is, and what happened to it, store by store; ``verdict`` says it in one line."""

    task_id: str
    verdict: str
    exists: bool = False
    task: dict[str, Any] | None = None
    ledger: list[dict[str, Any]] = field(default_factory=list)
    mirror: dict[str, Any] = field(default_factory=dict)
    celery_result: Mapping[str, Any] | None = None
    last_history: Sequence[Mapping[str, Any]] = field(default_factory=list)
    # The history row that brought the task into its current state (what a "cancelled by ..." verdict names).
    state_entered: Mapping[str, Any] | None = None
    # Where the newest signed audit checkpoint saw the task, if it is gone from SQL without a valid tombstone.
    checkpoint: dict[str, Any] | None = None

    @property
    def found(self) -> bool:
        return (
            self.exists
            or bool(self.ledger)
            or self.mirror.get("present")
            or self.celery_result is not None
            or self.checkpoint is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _day(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value else "?"


def _ledger(entry: PurgeLedger) -> dict[str, Any]:
    archive = Path(entry.archive_file)
    present = archive.exists()
    intact = present and checksum(archive) == entry.archive_checksum
    return {
        "purged_at": entry.purged_at,
        "policy": entry.policy,
        "actor": entry.actor,
        "channel": entry.channel,
        "state": entry.state,
        "title": entry.title,
        "owner": entry.owner_username,
        "owner_id": entry.owner_id,
        "archive_file": entry.archive_file,
        "archive_checksum": entry.archive_checksum,
        "archive_present": present,
        "archive_intact": intact,
        "restorable": intact,
        "restored_at": entry.restored_at,
        "restored_by": entry.restored_by,
        "signature_valid": entry.signature_valid(),
    }


def _mirror(task_id: Any, task_values: dict[str, Any] | None) -> dict[str, Any]:
    try:
        entry = mirror.fetch(task_id)
    except RedisError as exc:
        return {"present": None, "error": f"Redis unreachable: {exc}"}
    if entry is None:
        return {"present": False}
    consistent = task_values is not None and entry == mirror.snapshot(task_values)
    return {"present": True, "consistent": consistent, "state": entry.get("state")}


def locate(task_id: Any) -> Location:
    """Look for the task in SQL, the purge ledger and its archive, the Redis mirror and Celery's results."""
    pk = parse_task_id(task_id)
    columns = (*mirror.MIRRORED_FIELDS, "deleted_by__username", "delete_reason", "dispatch_count")
    values = Task.objects.filter(pk=pk).values(*columns).first()
    publish_count = values.pop("dispatch_count") if values is not None else 0
    history = list(TaskHistory.objects.filter(task_id=pk).order_by("-seq").values(*_HISTORY_FIELDS)[:5])
    ledger = [_ledger(e) for e in PurgeLedger.objects.filter(task_id=pk).order_by("-purged_at")]
    # Celery keeps a result per publish, under "<task id>.<publish count>" (a bare task id before publishes had one).
    publishes = TaskResult.objects.filter(Q(task_id=str(pk)) | Q(task_id__startswith=f"{pk}."))
    result: Mapping[str, Any] | None = publishes.order_by("-date_done").values("status", "date_done", "worker").first()
    if result is None and values is not None:
        result = _celery_view_of_current_publish(pk, publish_count)
    gone = values is None and not _tombstones(ledger)
    location = Location(
        task_id=str(pk),
        verdict="",
        exists=values is not None,
        task=values,
        ledger=ledger,
        mirror=_mirror(pk, {k: values[k] for k in mirror.MIRRORED_FIELDS} if values else None),
        celery_result=result,
        last_history=history,
        state_entered=_state_entered(pk, values["state"]) if values else None,
        checkpoint=_checkpointed(pk) if gone else None,
    )
    location.verdict = _verdict(location)
    return location


def _celery_view_of_current_publish(pk: Any, publish_count: int) -> dict[str, Any] | None:
    """What Celery reads of the task's current publish (its ``publish_count``-th) when it has no row: its running
    or completed attempt, read from the task (``tasks.tasks.ResultBackend``: a completion's row would repeat the
    task's)."""
    meta = current_delivery_meta(celery_id(pk, publish_count))
    return {"status": meta["status"], "date_done": meta.get("date_done"), "worker": meta["worker"]} if meta else None


def _state_entered(pk: Any, state: str) -> dict[str, Any] | None:
    """The row of the transition into ``state`` (not a later restore or edit, which keep the state)."""
    rows = TaskHistory.objects.filter(task_id=pk, state_to=state).exclude(state_from=state)
    rows = rows.filter(event__in=(HistoryEvent.CREATED, HistoryEvent.TRANSITION))
    return rows.order_by("-seq").values(*_HISTORY_FIELDS).first()


def _checkpointed(pk: Any) -> dict[str, Any] | None:
    """The newest valid checkpoint's record of the task, if it has one (a scan of that file: only for lost tasks)."""
    checkpoint, _ = checkpoints.newest(find=pk)
    entry = checkpoint.found if checkpoint else None
    if checkpoint is None or entry is None:
        return None
    return {
        "file": str(checkpoint.path),
        "created_at": checkpoint.created_at,
        "history_count": entry.seq,
        "history_head": entry.head,
        "backup": checkpoint.backup,
    }


def _verdict(location: Location) -> str:
    task, ledger = location.task, location.ledger
    if task is not None:
        last = location.last_history[0] if location.last_history else {}
        by = f"{last.get('actor', '?')} via {last.get('channel', '?')}"
        if task["deleted_at"] is not None:
            verdict = (
                f"soft-deleted on {_day(task['deleted_at'])} by {task['deleted_by__username'] or '?'}"
                f" ({task['delete_reason'] or 'no reason given'}); restorable from the trash"
            )
        elif task["state"] == "cancelled":
            entered = location.state_entered or {}
            verdict = (
                f"cancelled on {_day(task['completed_at'])} by {entered.get('actor', '?')} via "
                f"{entered.get('channel', '?')}: {entered.get('reason') or 'no reason given'}"
            )
        else:
            verdict = f"live: {task['state']}, last changed {_day(task['updated_at'])} by {by}"
        if ledger and ledger[0]["restored_at"]:
            verdict += f" (purged on {_day(ledger[0]['purged_at'])}, restored on {_day(ledger[0]['restored_at'])})"
        return verdict
    valid = _tombstones(ledger)
    if valid:
        entry = valid[0]
        where = f"archive {entry['archive_file']}"
        state = "restorable" if entry["restorable"] else "NOT restorable: archive missing or corrupt"
        return f"purged on {_day(entry['purged_at'])} by policy {entry['policy']} ({entry['actor']}); {where}; {state}"
    return _lost_verdict(location)


def _tombstones(ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tombstones that account for a task's absence: validly signed, and not followed by a restore."""
    return [entry for entry in ledger if entry["signature_valid"] and not entry["restored_at"]]


def _lost_verdict(location: Location) -> str:
    """No task row and no valid tombstone: say what each other store knows, never "never stored" if one saw it."""
    seen = []
    if location.checkpoint:
        cp = location.checkpoint
        backup = f", written with backup {cp['backup']}" if cp["backup"] else ""
        seen.append(
            f"seen in checkpoint {Path(cp['file']).name} at {_day(cp['created_at'])} with "
            f"{cp['history_count']} history rows{backup}"
        )
    for entry in location.ledger:
        seen.append(
            f"purged on {_day(entry['purged_at'])} and restored on {_day(entry['restored_at'])}"
            if entry["signature_valid"]
            else f"a tombstone of {_day(entry['purged_at'])} names it but is not validly signed (forged or edited)"
        )
    if location.mirror.get("present"):
        seen.append("the Redis mirror holds it (it mirrors committed tasks only)")
    if location.celery_result:
        seen.append("Celery has a result for it (only committed tasks are dispatched)")
    if seen:
        return (
            f"was stored: {'; '.join(seen)}; now missing from the database without a valid tombstone: "
            "possible tampering (run verify_audit)"
        )
    return "never existed: no task, purge ledger entry, archive, checkpoint, mirror entry or Celery result has this id"
