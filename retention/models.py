"""Retention policies, the purge ledger (signed, chained tombstones), deletion events and the deletion breaker."""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from tasks import keys
from tasks.audit import GENESIS_HASH, canonical_json, format_timestamp
from tasks.exceptions import AppendOnlyViolation
from tasks.keys import KEY_ID_MAX_LENGTH


class PolicyScope(models.TextChoices):
    COMPLETED = "completed", "Completed tasks"
    FAILED = "failed", "Failed tasks"
    CANCELLED = "cancelled", "Cancelled tasks"
    INTERRUPTED = "interrupted", "Interrupted tasks"
    SOFT_DELETED = "soft_deleted", "Soft-deleted tasks (grace period)"


class RetentionPolicy(models.Model):
    """How long tasks in one scope are kept before a purge may archive and remove them."""

    scope = models.CharField(max_length=16, choices=PolicyScope.choices, unique=True)
    keep_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days after the task finished (or was soft-deleted). Empty = never purge."
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["scope"]
        verbose_name_plural = "retention policies"

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.scope}-{'never' if self.keep_days is None else f'{self.keep_days}d'}"


class LedgerQuerySet(models.QuerySet):
    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation("the purge ledger is append-only")


class PurgeLedger(models.Model):
    """The tombstone of a purged task: what it was, who purged it by which policy, and where it is archived.

    Signed with an audit key and chained to the previous tombstone (``append_tombstones``), so a tombstone
    forged, edited or removed with raw SQL is named by ``verify_audit``, and audit checkpoints vouch for the head.
    """

    task_id = models.UUIDField(db_index=True)
    title = models.CharField(max_length=200)
    state = models.CharField(max_length=16)
    owner_id = models.IntegerField(null=True, blank=True)
    owner_username = models.CharField(max_length=150, blank=True)
    task_created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(default=timezone.now, db_index=True)
    policy = models.CharField(max_length=64)
    actor = models.CharField(max_length=150)
    channel = models.CharField(max_length=16)
    archive_file = models.CharField(max_length=500)
    archive_checksum = models.CharField(max_length=71, help_text="sha256:<hex> of the archive file")
    history_count = models.PositiveIntegerField()
    history_head = models.CharField(max_length=64)
    restored_at = models.DateTimeField(null=True, blank=True)
    restored_by = models.CharField(max_length=150, blank=True)
    key_id = models.CharField(max_length=KEY_ID_MAX_LENGTH, blank=True)
    prev_mac = models.CharField(max_length=64, blank=True)
    mac = models.CharField(
        max_length=64, blank=True, help_text="HMAC-SHA256 (audit key key_id) over prev_mac and the tombstone."
    )

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["-purged_at"]
        verbose_name = "purge ledger entry"
        verbose_name_plural = "purge ledger"
        permissions = [("restore_purgeledger", "Can restore a purged task from its archive")]

    def __str__(self) -> str:
        return f"{self.task_id} purged {self.purged_at:%Y-%m-%d} by {self.policy}"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation("the purge ledger is append-only")

    def expected_mac(self) -> str:
        """The signature this tombstone must carry: its content chained to ``prev_mac`` (``keys.UnknownKey`` if
        ``key_id`` is not configured). ``restored_at``/``restored_by`` are notes added later, not signed."""
        content = {name: getattr(self, name) for name in SIGNED_TOMBSTONE_FIELDS}
        content = {k: format_timestamp(v) if isinstance(v, datetime) else v for k, v in content.items()}
        return keys.sign(keys.LEDGER, self.key_id, self.prev_mac + "\n" + canonical_json(content))

    def signature_valid(self) -> bool:
        try:
            return bool(self.mac) and hmac.compare_digest(self.mac, self.expected_mac())
        except keys.UnknownKey:
            return False


SIGNED_TOMBSTONE_FIELDS = (
    "task_id",
    "title",
    "state",
    "owner_id",
    "owner_username",
    "task_created_at",
    "deleted_at",
    "purged_at",
    "policy",
    "actor",
    "channel",
    "archive_file",
    "archive_checksum",
    "history_count",
    "history_head",
    "key_id",
)


def append_tombstones(tombstones: list[PurgeLedger]) -> None:
    """Sign and insert ``tombstones`` at the end of the ledger's chain, inside the caller's transaction.

    Writers of the ledger queue on a table lock (PostgreSQL; SQLite's write lock already serializes them),
    so the chain never forks.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE retention_purgeledger IN EXCLUSIVE MODE")
    last = PurgeLedger.objects.order_by("-pk").values_list("mac", flat=True).first()
    prev, key_id = last or GENESIS_HASH, keys.current_key_id()
    for tombstone in tombstones:
        tombstone.key_id, tombstone.prev_mac = key_id, prev
        tombstone.mac = prev = tombstone.expected_mac()
    PurgeLedger.objects.bulk_create(tombstones)


class SignedPurgeLedger:
    """The purge ledger as the audit checkpoints see it (``tasks.hooks.SignedLedger``)."""

    def head(self) -> dict[str, Any]:
        last = PurgeLedger.objects.order_by("-pk").values("pk", "mac").first()
        if last is None:
            return {"count": 0, "last_id": None, "head": GENESIS_HASH}
        return {"count": PurgeLedger.objects.count(), "last_id": last["pk"], "head": last["mac"]}

    def problems(self, checkpointed: Mapping[str, Any] | None) -> Iterator[str]:
        prev, count, seen = GENESIS_HASH, 0, None
        last_id = checkpointed.get("last_id") if checkpointed else None
        for row in PurgeLedger.objects.order_by("pk").iterator(chunk_size=1000):
            count += 1
            name = f"tombstone #{row.pk} (task {row.task_id})"
            if row.prev_mac != prev:
                yield f"{name}: link broken: a tombstone before it was removed or inserted"
            if not row.signature_valid():
                yield f"{name}: signature invalid: forged or edited"
            prev = row.mac
            if row.pk == last_id:
                seen = (count, row.mac)
        if checkpointed and last_id is not None:
            if seen is None:
                yield f"tombstone #{last_id}, the last one checkpointed, is missing: the ledger was cut"
            elif seen != (checkpointed["count"], checkpointed["head"]):
                yield f"tombstones up to #{last_id} differ from the checkpoint's: removed or rewritten"

    def tombstones(self, task_ids: Collection[UUID]) -> dict[UUID, tuple[int, str]]:
        found: dict[UUID, tuple[int, str]] = {}
        for row in PurgeLedger.objects.filter(task_id__in=list(task_ids)):
            if row.signature_valid() and row.history_count >= found.get(row.task_id, (-1, ""))[0]:
                found[row.task_id] = (row.history_count, row.history_head)
        return found


class DeletionKind(models.TextChoices):
    SOFT_DELETE = "soft_delete", "Soft delete"
    PURGE = "purge", "Purge run"


class DeletionEvent(models.Model):
    """One counted deletion: a soft delete (one task) or a purge run (``task_count`` tasks)."""

    kind = models.CharField(max_length=16, choices=DeletionKind.choices)
    task_id = models.UUIDField(null=True, blank=True)
    task_count = models.PositiveIntegerField(default=1)
    actor = models.CharField(max_length=150)
    channel = models.CharField(max_length=16)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.task_count} by {self.actor} at {self.at:%Y-%m-%d %H:%M:%S}"


class DeletionBreaker(models.Model):
    """The deletion circuit breaker (one row). Tripped by a spike; deletions wait for a staff acknowledgement."""

    tripped_at = models.DateTimeField(null=True, blank=True)
    tripped_reason = models.TextField(blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    class Meta:
        permissions = [("acknowledge_deletionbreaker", "Can acknowledge a deletion spike")]

    def __str__(self) -> str:
        return "deletions suspended" if self.is_tripped else "deletions allowed"

    @property
    def is_tripped(self) -> bool:
        return self.tripped_at is not None and (self.acknowledged_at is None or self.acknowledged_at < self.tripped_at)


class PurgedHistoryCount(models.Model):
    """History rows that purges removed, by kind (event, from-state, to-state, channel): /metrics adds them to the
    rows still in SQL, so a counter derived from history never goes back when a purge removes a task.

    Updated in the purge's own transaction (``retention.services``); an unarchived task's rows come back into the
    history and are taken off here, in the unarchive's transaction.
    """

    event = models.CharField(max_length=16)
    state_from = models.CharField(max_length=16, blank=True)
    state_to = models.CharField(max_length=16, blank=True)
    channel = models.CharField(max_length=16)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "state_from", "state_to", "channel"], name="purged_history_kind")
        ]

    def __str__(self) -> str:
        return f"{self.count} purged {self.event} rows ({self.state_from}->{self.state_to} via {self.channel})"


class AuditVerification(models.Model):
    """One verification of the whole audit trail by the housekeeping job (``crux.verify_audit``): /metrics exposes
    the latest (``crux_audit_chain_ok``), so an alert fires when a chain, a checkpoint or the ledger is broken."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(db_index=True)
    tasks_checked = models.PositiveIntegerField()
    problems = models.PositiveIntegerField()
    first_problems = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        verdict = "intact" if not self.problems else f"{self.problems} problem(s)"
        return f"audit verification at {self.finished_at:%Y-%m-%d %H:%M:%S}: {verdict}"
