"""Hooks through which the apps above the task domain take part in its writes, without being imported by it.

The deletion breaker (``retention``) admits or refuses each soft delete; the
Redis mirror (``persistence``) follows live progress, which is written with
``QuerySet.update()`` and so sends no ``post_save``. Each upper app registers
itself in its ``AppConfig.ready()``.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from django.dispatch import Signal


class DeletionGuard(Protocol):
    def __call__(
        self, *, kind: str, actor: str, channel: str, task_id: UUID | None = None, task_count: int = 1
    ) -> None: ...


_deletion_guards: list[DeletionGuard] = []


def add_deletion_guard(guard: DeletionGuard) -> None:
    """Have ``guard`` admit every deletion before it is written; it refuses one by raising a TaskError."""
    if guard not in _deletion_guards:
        _deletion_guards.append(guard)


def admit_deletion(*, kind: str, actor: str, channel: str, task_id: UUID | None = None, task_count: int = 1) -> None:
    """Ask every registered guard to admit a deletion (a soft delete, or a purge of ``task_count`` tasks)."""
    for guard in _deletion_guards:
        guard(kind=kind, actor=actor, channel=channel, task_id=task_id, task_count=task_count)


# Sent with ``task_id`` after a running attempt's progress or phase was written.
progress_reported = Signal()
