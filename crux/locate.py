"""Forensics: "what happened to task X?" answered from every store, verdict first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django_celery_results.models import TaskResult
from redis.exceptions import RedisError

from persistence import mirror
from retention.models import PurgeLedger
from tasks.ids import parse_task_id
from tasks.models import Task, TaskHistory
from tasks.records import checksum


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

    @property
    def found(self) -> bool:
        return self.exists or bool(self.ledger) or self.mirror.get("present") or self.celery_result is not None

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
    values = Task.objects.filter(pk=pk).values(*mirror.MIRRORED_FIELDS, "deleted_by__username", "delete_reason").first()
    history = list(
        TaskHistory.objects.filter(task_id=pk)
        .order_by("-seq")
        .values("seq", "created_at", "event", "state_from", "state_to", "actor", "channel", "reason")[:5]
    )
    ledger = [_ledger(e) for e in PurgeLedger.objects.filter(task_id=pk).order_by("-purged_at")]
    result = TaskResult.objects.filter(task_id=str(pk)).values("status", "date_done", "worker").first()
    location = Location(
        task_id=str(pk),
        verdict="",
        exists=values is not None,
        task=values,
        ledger=ledger,
        mirror=_mirror(pk, {k: values[k] for k in mirror.MIRRORED_FIELDS} if values else None),
        celery_result=result,
        last_history=history,
    )
    location.verdict = _verdict(location)
    return location


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
            verdict = f"cancelled on {_day(task['completed_at'])} by {by}: {last.get('reason') or 'no reason given'}"
        else:
            verdict = f"live: {task['state']}, last changed {_day(task['updated_at'])} by {by}"
        if ledger and ledger[0]["restored_at"]:
            verdict += f" (purged on {_day(ledger[0]['purged_at'])}, restored on {_day(ledger[0]['restored_at'])})"
        return verdict
    if ledger:
        entry = ledger[0]
        where = f"archive {entry['archive_file']}"
        state = "restorable" if entry["restorable"] else "NOT restorable: archive missing or corrupt"
        return f"purged on {_day(entry['purged_at'])} by policy {entry['policy']} ({entry['actor']}); {where}; {state}"
    if location.mirror.get("present") or location.celery_result:
        seen = "a Redis mirror entry" if location.mirror.get("present") else "a Celery result"
        return f"no task record and no purge ledger entry, yet {seen} exists: not a task Crux ever stored durably"
    return "never existed: no task, purge ledger entry, archive, mirror entry or Celery result has this id"
