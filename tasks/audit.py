"""The audit trail's mechanics: who/why context, change diffs and the keyed hash chain.

Services open an ``audited(...)`` block; every tracked change saved inside it is
recorded (by the history writer in ``tasks.history``) as one ``TaskHistory`` row whose
HMAC (under an audit key kept outside the database, ``tasks.keys``) chains it to the
previous row of its task. A tracked change saved outside such a block is refused,
so no code path changes a task without naming who, through what and why.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from tasks import keys
from tasks.exceptions import MissingAuditContext
from tasks.redaction import redact, redact_text

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser, User

# Who acts on a task: a signed-in user, or a system component by its non-empty name ("system:worker").
Actor: TypeAlias = "AbstractBaseUser | str"
WORKER_ACTOR = "system:worker"
RECOVERY_ACTOR = "system:recovery"
CELERY_REVOKE_ACTOR = "celery:revoke"
# The components that write a history row to many tasks: a history row's ``actor`` holds each as a code, its
# position here (tasks.models.CodedNameField). Append only.
SYSTEM_ACTORS = (WORKER_ACTOR, RECOVERY_ACTOR, CELERY_REVOKE_ACTOR)

GENESIS_HASH = "0" * 64


class Channel(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    WORKER = "worker", "Worker"
    COMMAND = "command", "Management command"
    RECOVERY = "recovery", "Recovery"
    RETENTION = "retention", "Retention"
    SYSTEM = "system", "System"
    SHELL = "shell", "Shell"
    SCHEDULE = "schedule", "Periodic schedule"
    CELERY = "celery", "Celery control (revoke, terminate)"


class HistoryEvent(models.TextChoices):
    CREATED = "created", "Created"
    TRANSITION = "transition", "State transition"
    EDIT = "edit", "Edit"
    SOFT_DELETE = "soft_delete", "Soft delete"
    RESTORE = "restore", "Restore"
    UNARCHIVE = "unarchive", "Restored from purge archive"


@dataclass(frozen=True)
class AuditContext:
    """Who is acting, through which channel, and why."""

    actor: str
    channel: str
    reason: str = ""
    user_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None


_current: ContextVar[AuditContext | None] = ContextVar("crux_audit_context", default=None)
_loading: ContextVar[bool] = ContextVar("crux_loading_rows", default=False)


@contextmanager
def loading_rows() -> Iterator[None]:
    """Let raw saves of deserialized rows (a backup being loaded) through: their history comes with them."""
    token = _loading.set(True)
    try:
        yield
    finally:
        _loading.reset(token)


def is_loading_rows() -> bool:
    return _loading.get()


def actor_label(actor: Actor) -> tuple[str, int | None]:
    """Return (label, user id) for a user instance or a system component name."""
    if isinstance(actor, str):
        if not actor.strip():
            raise MissingAuditContext("an audit actor must be named")
        return actor, None
    if getattr(actor, "is_authenticated", False):
        return actor.get_username(), actor.pk
    raise MissingAuditContext(f"cannot attribute a change to {actor!r}")


def signed_in(user: User | AnonymousUser) -> User:
    """A request's user where the view requires authentication: only a signed-in user sees tasks or acts on them."""
    if not user.is_authenticated:
        raise MissingAuditContext(f"{user!r} is not signed in")
    return user


@contextmanager
def audited(
    actor: Actor,
    *,
    channel: str,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
    event: str | None = None,
) -> Iterator[AuditContext]:
    """Attribute every task change saved inside the block to ``actor`` via ``channel``.

    With ``event``, a save records a row of that event even when no tracked
    field changed (e.g. a task brought back from a purge archive).
    """
    label, user_id = actor_label(actor)
    ctx = AuditContext(
        actor=redact_text(label),
        channel=Channel(channel).value,
        reason=redact_text(reason),  # free text from any channel: masked before its row is hashed
        user_id=user_id,
        details=redact(dict(details or {})),
        event=None if event is None else HistoryEvent(event).value,
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def active_context() -> AuditContext | None:
    """The audit context of the enclosing ``audited`` block, if any."""
    return _current.get()


def current_context() -> AuditContext:
    ctx = _current.get()
    if ctx is None:
        raise MissingAuditContext(
            "task changes must go through tasks.services (or an audited(...) block) "
            "so that the history row names who, through what and why"
        )
    return ctx


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for a model value (datetimes, UUIDs, decimals become strings)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def same_json(a: Any, b: Any) -> bool:
    """Whether two model values certainly have the same ``to_jsonable`` form, told without converting them: JSON-like
    values (None, text, numbers, booleans, and dicts and lists of them) of the same JSON types at every level and
    equal (``==`` alone takes 1, 1.0 and True for one value). A subclass counts as its JSON type (a state, a ``str``
    enum, is its text). False is no verdict: other types (a datetime, whose offset its form shows) and NaN are left
    to the conversion."""
    kind = type(a)
    if kind is type(b):
        if kind is dict:
            return a.keys() == b.keys() and all(same_json(value, b[key]) for key, value in a.items())
        if kind is list:
            return len(a) == len(b) and all(map(same_json, a, b))
        if kind in _JSON_SCALARS:
            return bool(a == b)
    scalar = _json_scalar(a)
    return scalar is not None and scalar is _json_scalar(b) and bool(a == b)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _json_scalar(value: Any) -> type | None:
    """The JSON scalar type a value is written as (``bool`` before ``int``, of which it is a subclass), or None."""
    if value is None:
        return type(None)
    return next((kind for kind in (bool, str, int, float) if isinstance(value, kind)), None)


def _canonical(value: Any) -> Any:
    # Numbers are hashed by exact decimal value, so a database that re-renders
    # 1e20 as 100000000000000000000 (PostgreSQL jsonb) does not look tampered.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return {"#n": format(Decimal(repr(value)).normalize(), "f")}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return _canonical(to_jsonable(value))


def canonical_json(value: Any) -> str:
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


HASHED_FIELDS = (
    "task_id",
    "seq",
    "event",
    "state_from",
    "state_to",
    "actor",
    "actor_user_id",
    "channel",
    "reason",
    "error_message",
    "details",
    "created_at",
    "key_id",
)


def chain_link(key_id: str, prev_hash: str, content: str) -> str:
    """HMAC-SHA256 (history key ``key_id``) over the previous link and a row's canonical content.

    Without the key nobody can recompute a chain that verifies: not even with this code and the database.
    """
    return keys.sign(keys.HISTORY, key_id, prev_hash + "\n" + content)


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The chain link of ``row`` (its ``key_id`` names the audit key); raises ``keys.UnknownKey`` for another."""
    content = {name: row[name] for name in HASHED_FIELDS}
    content["task_id"] = str(content["task_id"])
    content["created_at"] = format_timestamp(content["created_at"])
    return chain_link(row["key_id"], prev_hash, canonical_json(content))


def legacy_row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The unkeyed sha256 link of rows written before the chain was keyed; trusted only where a keyed record
    vouches for the chain's head (the keying migration, a signed purge-ledger row)."""
    content = {name: row[name] for name in HASHED_FIELDS if name != "key_id"}
    content["task_id"] = str(content["task_id"])
    content["created_at"] = format_timestamp(content["created_at"])
    return hashlib.sha256((prev_hash + "\n" + canonical_json(content)).encode("utf-8")).hexdigest()


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:16]
