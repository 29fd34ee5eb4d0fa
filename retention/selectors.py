"""Reads of retention for /metrics: what purges removed (history rows by kind), when the last purge removed a task,
the deletion breaker's state, the latest verification of the audit trail. Each reads one small table or an index."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db.models import F, Max

from retention.models import AuditVerification, DeletionBreaker, PurgedHistoryCount, PurgeLedger
from tasks.models import HISTORY_KIND


def purged_history_counts() -> list[Mapping[str, Any]]:
    """History rows purges removed, grouped like ``tasks.selectors.count_history_by_kind`` (count ``n``)."""
    rows = PurgedHistoryCount.objects.order_by().values(*HISTORY_KIND)
    return list(rows.annotate(n=F("count")))


def last_purge_at() -> datetime | None:
    """When a purge last removed a task (its tombstone's time)."""
    return PurgeLedger.objects.aggregate(at=Max("purged_at"))["at"]


def deletion_breaker() -> DeletionBreaker | None:
    """The breaker's row, None if it never tripped nor was read for a deletion (a read here creates nothing)."""
    return DeletionBreaker.objects.filter(pk=1).first()


def last_audit_verification() -> AuditVerification | None:
    return AuditVerification.objects.order_by("-finished_at", "-pk").first()
