"""Task ids as clients send them: parsed once, a malformed one named as the field it came in."""

from __future__ import annotations

import re
import uuid
from typing import Any, TypeAlias

from tasks.exceptions import InvalidTaskData

# A task id as callers pass it: the UUID, or its text (from a URL, a command line, a message).
TaskId: TypeAlias = uuid.UUID | str

# The text of a UUID: 32 ASCII hex digits, dashed 8-4-4-4-12 or not. uuid.UUID() also takes braces, "urn:uuid:",
# "+" and "_" between digits and non-ASCII digits (it calls int(text, 16)); none of these is an id here.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}")


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """``value`` as a UUID, or None if it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    text = str(value)
    return uuid.UUID(text) if _UUID_TEXT.fullmatch(text) else None


def celery_id(task_id: Any, dispatch_count: int) -> str:
    """The Celery task id of a task's ``dispatch_count``-th publish: each publish its own, so a revoked id (workers
    remember them, across restarts with ``--statedb``) never discards a later publish of the same task."""
    return f"{task_id}.{dispatch_count}"


def task_id_of(celery_task_id: str) -> str:
    """The Crux task id a Celery task id of ``celery_id`` names (a bare task id, as older publishes used, too)."""
    return celery_task_id.partition(".")[0]


def parse_task_id(task_id: TaskId, *, field: str = "task_id") -> uuid.UUID:
    """The task id as a UUID, or InvalidTaskData naming ``field``."""
    pk = uuid_or_none(task_id)
    if pk is None:
        raise InvalidTaskData({field: [f"{str(task_id)[:60]!r} is not a valid UUID."]})
    return pk
