"""Retention policies, the purge ledger (tombstones), deletion events and the deletion breaker."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from tasks.exceptions import AppendOnlyViolation


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
    """The tombstone of a purged task: what it was, who purged it by which policy, and where it is archived."""

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

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["-purged_at"]
        verbose_name = "purge ledger entry"
        verbose_name_plural = "purge ledger"

    def __str__(self) -> str:
        return f"{self.task_id} purged {self.purged_at:%Y-%m-%d} by {self.policy}"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation("the purge ledger is append-only")


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
