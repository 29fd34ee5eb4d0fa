"""Typed errors of the task domain: callers (API, admin, commands) map them to 4xx."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded as CelerySoftTimeLimitExceeded
from django.utils import timezone


class TaskError(Exception):
    """Base class: a request that the task domain refuses, with a clear message."""

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        if field is not None:
            self.field = field


class UnknownState(TaskError):
    field = "state"

    def __init__(self, value: object):
        super().__init__(f"unknown state {value!r}")
        self.value = value


class Conflict(TaskError):
    """The request is valid but the task's current state (or the system's) does not allow it now."""


class IllegalTransition(Conflict):
    field = "state"

    def __init__(self, state_from: str, state_to: str, allowed: Iterable[str] = ()):
        targets = ", ".join(sorted(allowed)) or "none: it is final"
        super().__init__(f"illegal transition {state_from} -> {state_to} (allowed from {state_from}: {targets})")
        self.state_from = state_from
        self.state_to = state_to


class TaskNotFound(TaskError):
    def __init__(self, task_id: object):
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class StaleState(Conflict):
    """A compare-and-set saw another state than the caller expected."""

    field = "state"


class TaskChanged(StaleState):
    """A task read without its row lock was written by someone else before this write (``Task.keep_read``): the
    write did nothing, and its transaction must be rolled back (the caller reads the task again, under the lock)."""


class ClaimLost(Conflict):
    """A worker's attempt no longer holds its task (cancelled, or recovered after a stall and maybe claimed
    again): whatever it still tries to write is refused, and its handler stops."""

    field = "attempt_count"


class AttemptLimitReached(Conflict):
    """A requeue refused: the task used every attempt it is allowed (raise ``max_attempts`` to run it again)."""

    field = "max_attempts"


def _messages(value: Any) -> str:
    """A field's messages in one line; a nested field (a payload's) names its own fields."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_messages(v)}" for k, v in value.items())
    return " ".join(str(message) for message in value)


class InvalidTaskData(TaskError):
    """Input that fails validation; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, Any]):
        super().__init__("invalid task data: " + "; ".join(f"{k}: {_messages(v)}" for k, v in errors.items()))
        self.errors = errors


class AuditError(TaskError):
    """A write that would escape the audit trail; refused before anything is written."""


class MissingAuditContext(AuditError):
    pass


class UntrackedWrite(AuditError):
    pass


class AppendOnlyViolation(AuditError):
    pass


class HardDeleteRefused(AuditError):
    pass


class PermanentFailure(Exception):
    """Raised by a handler: the task fails now, whatever attempts it has left (bad input, a refused request)."""


class SoftTimeLimitExceeded(CelerySoftTimeLimitExceeded):
    """Raised in a handler when its attempt passes its soft time limit: time to clean up and stop.

    A subclass of Celery's, so a handler written for Celery (``except SoftTimeLimitExceeded``) catches it.
    """

    __str__ = Exception.__str__  # the message itself (billiard's repr-like text would end up in last_error)


class Retry(Exception):
    """Raised by a handler: try again later, ``after`` seconds from now or ``at`` a time (it uses an attempt).

    For a provider that says when to come back (a rate limit's Retry-After); other errors get the
    task's exponential backoff.
    """

    def __init__(self, message: str = "", *, after: float | None = None, at: datetime | None = None):
        if (after is None) == (at is None):
            raise ValueError("Retry needs exactly one of after= (seconds) or at= (a timezone-aware datetime)")
        if at is not None and timezone.is_naive(at):
            raise ValueError("Retry(at=...) needs a timezone-aware datetime")
        super().__init__(message or "retry requested by the handler")
        self.at: datetime = at if at is not None else timezone.now() + timedelta(seconds=float(after or 0))
