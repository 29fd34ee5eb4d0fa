"""Writes to the mirror: reconcile it with SQL (reporting drift), and recover one task from SQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from persistence import mirror
from tasks import hooks, services
from tasks.audit import Actor
from tasks.ids import TaskId, uuid_or_none
from tasks.models import Task
from tasks.states import ACTIVE_STATES

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    checked: int = 0
    missing: int = 0
    stale: int = 0
    orphan: int = 0
    vanished: int = 0
    repaired: int = 0
    duration: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return self.missing + self.stale + self.orphan

    def note(self, kind: str, task_id: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(f"{kind} {task_id}")


def _mirror_window_start() -> datetime:
    return timezone.now() - timedelta(seconds=settings.MIRROR_TERMINAL_TTL)


def expected_in_mirror(since: datetime) -> Q:
    """Tasks whose entry must be in the mirror: live ones, and finished ones still within the TTL."""
    return Q(state__in=ACTIVE_STATES) | Q(completed_at__gte=since) | Q(completed_at__isnull=True)


def _in_window(values: Mapping[str, Any], since: datetime) -> bool:
    completed = values["completed_at"]
    return values["state"] in ACTIVE_STATES or completed is None or completed >= since


def _purged(task_ids: list[str]) -> set[str]:
    """Those of ``task_ids`` that a purge removed (a validly signed tombstone says so), or that name no task."""
    uuids = {task_id: uuid_or_none(task_id) for task_id in task_ids}
    ledger = hooks.purge_ledger()
    tombstoned = ledger.tombstones([u for u in uuids.values() if u is not None]) if ledger else {}
    return {task_id for task_id, u in uuids.items() if u is None or u in tombstoned}


def reconcile_mirror(
    *,
    check_only: bool = False,
    batch_size: int = 2000,
    progress: Callable[[int], object] | None = None,
    forget_vanished: bool = False,
) -> ReconcileReport:
    """Compare every mirror entry with SQL; unless ``check_only``, rewrite the drifted ones.

    Missing: a task that should be mirrored has no entry. Stale: the entry differs
    from SQL. Orphan: an entry whose task a purge removed from SQL (dropped).
    Vanished: an entry whose task is gone from SQL without a tombstone: evidence
    that ``verify_audit`` and ``locate`` use, so it is kept (and logged at ERROR)
    unless ``forget_vanished``. Raises RedisError if
    Redis cannot be reached (there is nothing to reconcile against).
    """
    started = time.perf_counter()
    report = ReconcileReport()
    conn = mirror.client()
    since = _mirror_window_start()

    def compare(batch: mirror.Batch) -> None:
        statuses = mirror.apply(conn, batch, write=not check_only)
        missing, stale = statuses.count(mirror.MISSING), statuses.count(mirror.STALE)
        report.missing += missing
        report.stale += stale
        if missing or stale:
            for task_id, status in zip(batch.ids, statuses, strict=True):
                if len(report.examples) >= 10:
                    break
                if status == mirror.MISSING:
                    report.note("missing", task_id)
                elif status == mirror.STALE:
                    report.note("stale", task_id)
        report.checked += len(batch.ids)
        if not check_only:
            report.repaired += missing + stale
        if progress:
            progress(len(batch.ids))

    seen: set[str] = set()  # keys of the entries compared so far

    def compare_rows(tasks: QuerySet[Task]) -> None:
        for rows in mirror.raw_rows(tasks.order_by().values_list(*mirror.MIRRORED_FIELDS), batch_size):
            batch = mirror.batch_of_rows(rows)
            seen.update(batch.keys)
            compare(batch)

    compare_rows(Task.objects.filter(expected_in_mirror(since)))

    unseen = mirror.scan_task_ids(conn, skip=seen)
    for ids in mirror.batched(unseen, batch_size):
        found = {
            str(v["id"]): v
            for v in Task.objects.filter(pk__in=[i for i in ids if uuid_or_none(i)]).values(
                "id", "state", "completed_at"
            )
        }
        orphans = [i for i in ids if i not in found]
        purged = _purged(orphans) if orphans else set()
        vanished = [i for i in orphans if i not in purged]
        report.orphan += len(purged)
        report.vanished += len(vanished)
        for task_id in orphans:
            report.note("orphan" if task_id in purged else "vanished", task_id)
        if vanished:
            logger.error(
                "reconcile: %d task(s) are in the Redis mirror but gone from SQL without a purge tombstone "
                "(e.g. %s): possible tampering; their entries are kept as evidence (run verify_audit)",
                len(vanished),
                ", ".join(vanished[:5]),
            )
        dropped = [i for i in orphans if i in purged or forget_vanished]
        if dropped and not check_only:
            conn.delete(*[mirror.task_key(i) for i in dropped])
            report.repaired += len(dropped)
        outside = [v["id"] for v in found.values() if not _in_window(v, since)]
        if outside:
            compare_rows(Task.objects.filter(pk__in=outside))
    report.duration = time.perf_counter() - started
    return report


def recover_task(task_id: TaskId, *, actor: Actor, channel: str, reason: str) -> tuple[Task, str]:
    """Recover one task from SQL: requeue it if interrupted, failed or cancelled (``services.recover``, the
    admin's requeue too: same states, never past the attempt limit), else rewrite its mirror entry.

    Returns (task, "requeued" | "remirrored" | "mirror_failed"). A requeue is a
    transition with its history row (the mirror follows after commit); a
    re-mirror changes nothing in SQL.
    """
    task, requeued = services.recover(task_id, actor=actor, channel=channel, reason=reason)
    if requeued:
        return task, "requeued"
    return task, ("remirrored" if mirror.refresh(mirror.snapshot_of(task)) else "mirror_failed")
