"""Hooks through which the apps above the task domain take part in its writes, without being imported by it.

The deletion breaker (``retention``) admits or refuses each soft delete; the
Redis mirror (``persistence``) follows live progress, which is written with
``QuerySet.update()`` and so sends no ``post_save``; the purge ledger's signed
tombstones (``retention``) are vouched for by audit checkpoints, and the stores
that saw tasks (``persistence``) witness for them. Each upper app registers
itself in its ``AppConfig.ready()``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol
from uuid import UUID

from django.dispatch import Signal


class DeletionGuard(Protocol):
    def __call__(
        self,
        *,
        kind: str,
        actor: str,
        channel: str,
        task_id: UUID | None = None,
        task_count: int = 1,
        deliberate: bool = False,
        unlimited: bool = False,
    ) -> None: ...


class DeletionPreview(Protocol):
    def __call__(self, *, kind: str, task_count: int, deliberate: bool, unlimited: bool) -> str | None: ...


_deletion_guards: list[DeletionGuard] = []
_deletion_previews: list[DeletionPreview] = []


def add_deletion_guard(guard: DeletionGuard, preview: DeletionPreview | None = None) -> None:
    """Have ``guard`` admit every deletion before it is written; it refuses one by raising a TaskError.

    ``preview`` answers beforehand, writing nothing, why the guard would refuse a deletion (None: it would not).
    """
    if guard not in _deletion_guards:
        _deletion_guards.append(guard)
    if preview is not None and preview not in _deletion_previews:
        _deletion_previews.append(preview)


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
    """Ask every registered guard to admit one deletion operation of ``task_count`` tasks.

    ``deliberate``: a bulk confirmed by staff holding the permission; ``unlimited``: by a superuser.
    """
    for guard in _deletion_guards:
        guard(
            kind=kind,
            actor=actor,
            channel=channel,
            task_id=task_id,
            task_count=task_count,
            deliberate=deliberate,
            unlimited=unlimited,
        )


def deletion_refusal(*, kind: str, task_count: int, deliberate: bool, unlimited: bool) -> str | None:
    """Why the guards would refuse this deletion now (for a confirmation page), or None; writes nothing."""
    for preview in _deletion_previews:
        refusal = preview(kind=kind, task_count=task_count, deliberate=deliberate, unlimited=unlimited)
        if refusal:
            return refusal
    return None


# Sent with ``task_id`` after a running attempt's progress or phase was written.
progress_reported = Signal()

# Sent with ``task``, as the outcome of an attempt left it (completed, failed, or queued for its retry), once that
# outcome is committed: the worker observes the attempt's run time and queue wait from it (``crux.celery``).
attempt_ended = Signal()

# Sent with ``tasks`` and ``using`` after new tasks were inserted together (``tasks.history.create_tasks``): no
# ``post_save`` is sent for them.
tasks_created = Signal()


class SignedLedger(Protocol):
    """The purge ledger (``retention``): signed tombstones that checkpoints vouch for and ``verify_audit`` checks."""

    def head(self) -> dict[str, Any]:
        """The ledger's chain head now: ``{"count", "last_id", "head"}``."""
        ...

    def problems(self, checkpointed: Mapping[str, Any] | None) -> Iterator[str]:
        """Each forged, edited or missing tombstone, and a head that no longer matches ``checkpointed``."""
        ...

    def tombstones(self, task_ids: Collection[UUID]) -> dict[UUID, tuple[int, str]]:
        """For each of ``task_ids`` with a validly signed tombstone: its chain's (count, head) when purged."""
        ...


_ledgers: list[SignedLedger] = []


def set_purge_ledger(ledger: SignedLedger) -> None:
    """Register the purge ledger (once, from ``retention``'s ``AppConfig.ready()``)."""
    _ledgers[:] = [ledger]


def purge_ledger() -> SignedLedger | None:
    """The registered purge ledger; None where ``retention`` is not installed."""
    return _ledgers[0] if _ledgers else None


# A store above the task domain that remembers which tasks were committed (the Redis mirror, Celery's results):
# ``verify_audit`` asks it, so a task removed whole is named even before a checkpoint has seen it.
TaskWitness = Callable[[], Iterable[str]]
_witnesses: dict[str, TaskWitness] = {}


def add_task_witness(name: str, witness: TaskWitness) -> None:
    """Register ``witness``: it yields the ids of the tasks the store ``name`` has seen."""
    _witnesses[name] = witness


def task_witnesses() -> dict[str, TaskWitness]:
    return dict(_witnesses)
