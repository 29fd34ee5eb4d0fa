"""The deletion-spike monitor and circuit breaker.

Every soft delete and every purge run is admitted here first: the event is
counted in SQL, and when more than ``DELETE_SPIKE_THRESHOLD_PER_MINUTE`` would
happen within a minute the breaker trips (error log, optional webhook, admin
banner) and refuses every further deletion until a staff user acknowledges it.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from retention.models import DeletionBreaker, DeletionEvent
from tasks.exceptions import Conflict

logger = logging.getLogger(__name__)


class DeletionsSuspended(Conflict):
    """Deletions are refused while the breaker is tripped."""

    def __init__(self, reason: str):
        super().__init__(
            f"deletions are suspended: {reason}. A staff user must acknowledge the spike "
            "(admin: Retention > Deletion breaker, or `python manage.py acknowledge_deletions`)."
        )


def breaker() -> DeletionBreaker:
    return DeletionBreaker.objects.get_or_create(pk=1)[0]


def admit_deletion(*, kind: str, actor: str, channel: str, task_id: UUID | None = None, task_count: int = 1) -> None:
    """Count one deletion (a soft delete, or a purge run of ``task_count`` tasks) or refuse it.

    Runs in a transaction of its own, so that a trip is kept even though the
    deletion it refuses is not carried out.
    """
    refusal = None
    with transaction.atomic():
        state = DeletionBreaker.objects.select_for_update().get_or_create(pk=1)[0]
        now = timezone.now()
        if state.is_tripped:
            refusal = state.tripped_reason
        else:
            since = now - timedelta(minutes=1)
            if state.acknowledged_at and state.acknowledged_at > since:
                since = state.acknowledged_at
            recent = DeletionEvent.objects.filter(at__gte=since).count()
            threshold = settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE
            if recent >= threshold:
                refusal = (
                    f"deletion spike: {recent + 1} deletions within a minute (threshold {threshold}/min), "
                    f"the last one a {kind} by {actor} via {channel}"
                )
                state.tripped_at, state.tripped_reason = now, refusal
                state.save(update_fields=["tripped_at", "tripped_reason"])
                _alert(refusal)
            else:
                DeletionEvent.objects.create(
                    kind=kind, task_id=task_id, task_count=task_count, actor=actor, channel=channel, at=now
                )
    if refusal is not None:
        raise DeletionsSuspended(refusal)


def acknowledge(actor: str) -> bool:
    """Re-allow deletions; returns False if the breaker was not tripped."""
    with transaction.atomic():
        state = DeletionBreaker.objects.select_for_update().get_or_create(pk=1)[0]
        if not state.is_tripped:
            return False
        state.acknowledged_at, state.acknowledged_by = timezone.now(), actor
        state.save(update_fields=["acknowledged_at", "acknowledged_by"])
    logger.warning("deletion breaker acknowledged by %s; deletions allowed again", actor)
    return True


def _alert(message: str) -> None:
    logger.error("DELETION SPIKE: %s; deletions suspended until acknowledged", message)
    if settings.DELETE_SPIKE_WEBHOOK_URL:
        transaction.on_commit(partial(_post_webhook, settings.DELETE_SPIKE_WEBHOOK_URL, message))


def _post_webhook(url: str, message: str) -> None:
    body = json.dumps({"event": "deletion_spike", "text": f"Crux: {message}"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=3):
            pass
    except OSError as exc:
        logger.error("deletion spike webhook to %s failed: %s", url, exc)


def banner(request: Any) -> dict[str, Any]:
    """Template context: the tripped breaker, so every admin page can show the alert."""
    if not getattr(request, "user", None) or not request.user.is_staff:
        return {}
    state = DeletionBreaker.objects.filter(pk=1).first()
    return {"deletion_breaker": state} if state and state.is_tripped else {}
