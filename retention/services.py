"""Retention: which tasks a policy lets go, the purge (archive, ledger, then delete), and unarchiving.

The purge is the only code that removes tasks. It is a dry run unless
confirmed, takes at most ``MAX_TASKS_PER_PURGE`` tasks per run, writes and
fsyncs the archive before it deletes anything, records one signed, chained
ledger row (tombstone) per task in the transaction that deletes it, and goes
past the history triggers only through ``tasks.services.erase_tasks`` for whole
tasks it has archived.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from retention.archive import read_entry, write_archive
from retention.breaker import admit_deletion
from retention.models import (
    AuditVerification,
    DeletionKind,
    PolicyScope,
    PurgedHistoryCount,
    PurgeLedger,
    RetentionPolicy,
    append_tombstones,
)
from tasks import selectors, services
from tasks.audit import Actor, actor_label
from tasks.exceptions import InvalidTaskData, TaskError, TaskNotFound
from tasks.ids import TaskId, parse_task_id
from tasks.models import HISTORY_KIND, Task
from tasks.states import TaskState

logger = logging.getLogger(__name__)

ACTIVE = (TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING)


def policies() -> dict[str, RetentionPolicy]:
    """Every scope's policy; a scope never edited in the admin gets its default from the environment."""
    existing = {p.scope: p for p in RetentionPolicy.objects.all()}
    for scope in PolicyScope:
        if scope not in existing:
            existing[scope] = RetentionPolicy.objects.get_or_create(
                scope=scope, defaults={"keep_days": settings.RETENTION_DEFAULT_DAYS[scope]}
            )[0]
    return existing


def _scope_filter(policy: RetentionPolicy, now: datetime) -> Q | None:
    if policy.keep_days is None:
        return None
    cutoff = now - timedelta(days=policy.keep_days)
    if policy.scope == PolicyScope.SOFT_DELETED:
        return Q(deleted_at__lt=cutoff) & ~Q(state__in=ACTIVE)
    if policy.scope == PolicyScope.INTERRUPTED:
        return Q(deleted_at__isnull=True, state=TaskState.INTERRUPTED, updated_at__lt=cutoff)
    return Q(deleted_at__isnull=True, state=policy.scope, completed_at__lt=cutoff)


def candidates(*, limit: int, now: datetime | None = None) -> list[tuple[Task, RetentionPolicy]]:
    """Up to ``limit`` tasks some policy lets go, oldest first, each with the policy that does."""
    now = now or timezone.now()
    found: list[tuple[Task, RetentionPolicy]] = []
    for policy in policies().values():
        condition = _scope_filter(policy, now)
        if condition is None:
            continue
        for task in Task.objects.filter(condition).select_related("owner").order_by("created_at")[:limit]:
            found.append((task, policy))
    found.sort(key=lambda pair: pair[0].created_at)
    return found[:limit]


@dataclass
class PurgeReport:
    dry_run: bool
    limit: int
    selected: list[dict[str, Any]] = field(default_factory=list)
    purged: int = 0
    skipped: int = 0
    archive_file: str = ""
    archive_checksum: str = ""


def purge(*, actor: Actor, channel: str, confirm: bool = False, limit: int | None = None) -> PurgeReport:
    """Purge what the policies let go: a dry run (nothing deleted) unless ``confirm``."""
    cap = settings.MAX_TASKS_PER_PURGE
    limit = cap if limit is None else limit
    if not 1 <= limit <= cap:
        raise InvalidTaskData({"limit": [f"Ensure this value is between 1 and MAX_TASKS_PER_PURGE ({cap})."]})
    label = actor_label(actor)[0]
    chosen = candidates(limit=limit)
    report = PurgeReport(dry_run=not confirm, limit=limit)
    report.selected = [
        {"id": str(t.pk), "title": t.title, "state": t.state, "deleted": t.is_deleted, "policy": p.name}
        for t, p in chosen
    ]
    if not confirm or not chosen:
        return report
    admit_deletion(kind=DeletionKind.PURGE, actor=label, channel=channel, task_count=len(chosen))
    run_id = uuid.uuid4().hex[:12]
    policy_of = {t.pk: p for t, p in chosen}
    path, checksum = write_archive(
        list(policy_of), run_id=run_id, policy_note=", ".join(sorted({p.name for p in policy_of.values()}))
    )
    report.archive_file, report.archive_checksum = str(path), checksum
    now = timezone.now()
    with transaction.atomic():
        # Lock and re-check eligibility in one query per policy: a task may have changed since it was chosen.
        still_eligible: list[Task] = []
        for policy in {p.pk: p for p in policy_of.values()}.values():
            condition = _scope_filter(policy, now)
            if condition is None:
                continue
            ids = [pk for pk, p in policy_of.items() if p.pk == policy.pk]
            rows = Task.objects.select_for_update(of=("self",)).filter(condition, pk__in=ids).select_related("owner")
            still_eligible.extend(rows)
        report.skipped = len(policy_of) - len(still_eligible)
        append_tombstones(
            [_ledger_row(t, policy_of[t.pk].name, label, channel, str(path), checksum, now) for t in still_eligible]
        )
        report.purged = _erase_counted([t.pk for t in still_eligible])
    logger.warning("purge by %s via %s: %s tasks archived to %s and removed", label, channel, report.purged, path)
    return report


def _ledger_row(
    task: Task, policy: str, actor: str, channel: str, archive: str, checksum: str, purged_at: datetime
) -> PurgeLedger:
    """The tombstone of ``task``: enough to say what it was and where its archive is."""
    return PurgeLedger(
        task_id=task.pk,
        title=task.title,
        state=task.state,
        owner_id=task.owner_id,
        owner_username=task.owner.get_username() if task.owner else "",
        task_created_at=task.created_at,
        deleted_at=task.deleted_at,
        purged_at=purged_at,
        policy=policy,
        actor=actor,
        channel=channel,
        archive_file=archive,
        archive_checksum=checksum,
        history_count=task.history_count,
        history_head=task.history_head,
    )


@dataclass
class UnarchiveResult:
    task_id: uuid.UUID
    outcome: str
    ledger: PurgeLedger


def unarchive_task(
    task_id: TaskId, *, actor: Actor, channel: str, force: bool = False, note: str = ""
) -> UnarchiveResult:
    """Bring a purged task back from its archive: task, history (chain intact), outputs and metrics.

    Idempotent: a task already brought back is reported, not written again. A
    live task with that id is not overwritten unless ``force``; then it is
    purged first (archived, with its own ledger row), so nothing is lost.
    ``note``: the operator's reason, added to the history row's.
    """
    pk = parse_task_id(task_id)
    ledger = PurgeLedger.objects.filter(task_id=pk).order_by("-purged_at").first()
    if ledger is None:
        raise TaskNotFound(pk)
    if not ledger.signature_valid():
        raise TaskError(f"the tombstone of task {pk} is not validly signed (forged or edited): not restoring from it")
    live = Task.objects.filter(pk=pk).first()
    if live is not None:
        if ledger.restored_at is not None and not force:
            return UnarchiveResult(pk, "already restored", ledger)
        if not force:
            raise TaskError(f"task {pk} is live; refusing to overwrite it without --force", field="task_id")
        _purge_for_overwrite(live, actor=actor, channel=channel)
    entry = read_entry(Path(ledger.archive_file), pk, ledger.archive_checksum)
    label = actor_label(actor)[0]
    with transaction.atomic():
        restored = services.reinstate(
            entry,
            history_head=(ledger.history_count, ledger.history_head),
            actor=actor,
            channel=channel,
            reason=f"restored from purge archive {ledger.archive_file} (purged {ledger.purged_at:%Y-%m-%d} "
            f"by {ledger.policy})" + (f": {note}" if note else ""),
        )
        PurgeLedger.objects.filter(pk=ledger.pk).update(restored_at=timezone.now(), restored_by=label)
        _uncount_restored(restored)
    ledger.refresh_from_db()
    return UnarchiveResult(pk, "restored", ledger)


def _purge_for_overwrite(task: Task, *, actor: Actor, channel: str) -> None:
    label = actor_label(actor)[0]
    admit_deletion(kind=DeletionKind.PURGE, actor=label, channel=channel, task_id=task.pk)
    path, checksum = write_archive([task.pk], run_id=uuid.uuid4().hex[:12], policy_note="overwritten-by-restore")
    with transaction.atomic():
        task = Task.objects.select_for_update(of=("self",)).select_related("owner").get(pk=task.pk)
        tombstone = _ledger_row(task, "overwritten-by-restore", label, channel, str(path), checksum, timezone.now())
        append_tombstones([tombstone])
        _erase_counted([task.pk])


def _erase_counted(task_ids: list[uuid.UUID]) -> int:
    """Erase whole tasks (``services.erase_tasks``), first adding their history rows, by kind, to the purged counts
    in the caller's transaction: counters derived from history (``crux/metrics.py``) never go back."""
    for row in selectors.count_history_by_kind(task_ids):
        _add_purged({name: row[name] for name in HISTORY_KIND}, row["n"])
    return services.erase_tasks(task_ids)


def _uncount_restored(task: Task) -> None:
    """An unarchived task's history rows are back in SQL: take them off the purged counts (never below zero: a task
    purged before they were kept), except the ``unarchive`` row just written, which no purge removed."""
    latest = selectors.latest_history(task, 1)[0][-1]
    for row in selectors.count_history_by_kind([task.pk]):
        kind = {name: row[name] for name in HISTORY_KIND}
        n = row["n"] - (1 if kind == {name: getattr(latest, name) for name in HISTORY_KIND} else 0)
        if n:
            PurgedHistoryCount.objects.filter(**kind).update(count=Greatest(F("count") - n, 0))


def _add_purged(kind: dict[str, str], n: int) -> None:
    counted, created = PurgedHistoryCount.objects.get_or_create(**kind, defaults={"count": n})
    if not created:
        PurgedHistoryCount.objects.filter(pk=counted.pk).update(count=F("count") + n)


def record_audit_verification(*, batch_size: int = 500, keep: int = 100) -> AuditVerification:
    """Verify the whole audit trail as ``verify_audit`` does (against the newest checkpoint) and record the result:
    ``crux_audit_chain_ok`` on /metrics, so an alert names a broken chain without anyone running the command. Keeps
    the latest ``keep`` results."""
    started = timezone.now()
    checked = problems = 0
    first: list[str] = []

    def progress(n: int) -> None:
        nonlocal checked
        checked += n

    for problem in selectors.verify_audit_chains(batch_size=batch_size, progress=progress):
        problems += 1
        if len(first) < 20:
            first.append(str(problem))
    if problems:
        logger.error("audit verification: %s problem(s), first: %s", problems, first[:3])
    result = AuditVerification.objects.create(
        started_at=started, finished_at=timezone.now(), tasks_checked=checked, problems=problems, first_problems=first
    )
    old = AuditVerification.objects.order_by("-finished_at", "-pk").values_list("pk", flat=True)[keep:]
    AuditVerification.objects.filter(pk__in=list(old)).delete()
    return result
