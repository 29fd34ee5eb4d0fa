"""The deletion-spike monitor and circuit breaker.

Every deletion operation is admitted here first and counted in SQL
(``DeletionEvent``): a single soft delete (one task), a confirmed bulk soft
delete (one operation of N tasks), or a purge run. The rule, in order:

1. A tripped breaker refuses everything until a staff user acknowledges it.
2. A soft delete of many tasks at once must be deliberate (confirmed in the admin by staff holding the permission)
   and at most ``DELETE_BULK_MAX`` tasks: otherwise it is refused whole, without tripping.
3. More than ``DELETE_SPIKE_THRESHOLD_PER_MINUTE`` operations within a minute trip the breaker (a script deleting
   in a loop, one task at a time), however small each is.
4. For anyone but a superuser, more than ``DELETE_TASKS_PER_MINUTE`` soft-deleted tasks within a minute (never less
   than one whole bulk) trip it too: repeated bulks count by their size.

A trip raises an alert (error log, optional webhook, admin banner). ``deletion_refusal`` answers the same rule
beforehand, writing nothing, for a confirmation page.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from retention.models import DeletionBreaker, DeletionEvent, DeletionKind
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


class DeletionRefused(Conflict):
    """A deletion refused by its size or its kind (not a spike: the breaker is not tripped)."""


@dataclass(frozen=True)
class Judgement:
    refusal: str | None = None
    trips: bool = False


def _judge(
    state: DeletionBreaker, *, kind: str, actor: str, channel: str, task_count: int, deliberate: bool, unlimited: bool
) -> Judgement:
    """The breaker's rule (module docstring) for one deletion operation now; reads only."""
    if state.is_tripped:
        return Judgement(state.tripped_reason)
    bulk_max = settings.DELETE_BULK_MAX
    if kind == DeletionKind.SOFT_DELETE and task_count > 1:
        if not deliberate:
            return Judgement(f"a soft delete of {task_count} tasks at once must be a confirmed bulk action by staff")
        if task_count > bulk_max:
            return Judgement(
                f"{task_count} tasks is over the limit of one bulk soft delete (DELETE_BULK_MAX = {bulk_max}): "
                "narrow the selection"
            )
    recent = DeletionEvent.objects.filter(at__gte=_window_start(state))
    operations, threshold = recent.count(), settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE
    if operations >= threshold:
        return Judgement(
            f"deletion spike: {operations + 1} deletions within a minute (threshold {threshold}/min), "
            f"the last one a {kind} by {actor} via {channel}",
            trips=True,
        )
    if kind == DeletionKind.SOFT_DELETE and not unlimited:
        cap = max(settings.DELETE_TASKS_PER_MINUTE, bulk_max)
        deleted = recent.filter(kind=DeletionKind.SOFT_DELETE).aggregate(n=Sum("task_count"))["n"] or 0
        if deleted + task_count > cap:
            return Judgement(
                f"deletion spike: {deleted + task_count} tasks soft-deleted within a minute (at most {cap}/min "
                f"for anyone but a superuser), the last {task_count} by {actor} via {channel}",
                trips=True,
            )
    return Judgement()


def _window_start(state: DeletionBreaker) -> datetime:
    since = timezone.now() - timedelta(minutes=1)
    if state.acknowledged_at and state.acknowledged_at > since:
        return state.acknowledged_at
    return since


def deletion_refusal(*, kind: str, task_count: int, deliberate: bool, unlimited: bool) -> str | None:
    """Why a deletion operation would be refused now (and whether it would trip the breaker), or None."""
    state = DeletionBreaker.objects.filter(pk=1).first() or DeletionBreaker()
    judgement = _judge(
        state,
        kind=kind,
        actor="you",
        channel="admin",
        task_count=task_count,
        deliberate=deliberate,
        unlimited=unlimited,
    )
    if judgement.refusal is None:
        return None
    if judgement.trips:
        return f"the deletion breaker would trip and refuse it: {judgement.refusal}"
    return judgement.refusal


def admit_deletion(
    *,
    kind: str,
    actor: str,
    channel: str,
    task_id: UUID | None = None,
    task_count: int = 1,
    deliberate: bool = False,
    unlimited: bool = False,
) -> None:
    """Count one deletion operation of ``task_count`` tasks, or refuse it (DeletionsSuspended, DeletionRefused).

    Runs in a transaction of its own, so that a trip is kept even though the
    deletion it refuses is not carried out.
    """
    with transaction.atomic():
        state = DeletionBreaker.objects.select_for_update().get_or_create(pk=1)[0]
        judgement = _judge(
            state,
            kind=kind,
            actor=actor,
            channel=channel,
            task_count=task_count,
            deliberate=deliberate,
            unlimited=unlimited,
        )
        if judgement.trips:
            state.tripped_at, state.tripped_reason = timezone.now(), judgement.refusal or ""
            state.save(update_fields=["tripped_at", "tripped_reason"])
            _alert(state.tripped_reason)
        elif judgement.refusal is None:
            DeletionEvent.objects.create(
                kind=kind, task_id=task_id, task_count=task_count, actor=actor, channel=channel, at=timezone.now()
            )
    if judgement.refusal is None:
        return
    if judgement.trips or state.is_tripped:
        raise DeletionsSuspended(judgement.refusal)
    raise DeletionRefused(f"deletion refused: {judgement.refusal}")


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
        transaction.on_commit(partial(post_webhook, settings.DELETE_SPIKE_WEBHOOK_URL, message))


def post_webhook(url: str, message: str, event: str = "deletion_spike") -> None:
    """POST an alert to the operators' webhook (DELETE_SPIKE_WEBHOOK_URL): the breaker's, and the backup drills'."""
    body = json.dumps({"event": event, "text": f"Crux: {message}"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=3):
            pass
    except OSError as exc:
        logger.error("%s webhook to %s failed: %s", event, url, exc)


def banner(request: Any) -> dict[str, Any]:
    """Template context: the tripped breaker, so every admin page can show the alert."""
    if not getattr(request, "user", None) or not request.user.is_staff:
        return {}
    state = DeletionBreaker.objects.filter(pk=1).first()
    return {"deletion_breaker": state} if state and state.is_tripped else {}
