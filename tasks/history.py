"""The history writer: every tracked change of a task becomes one chained TaskHistory row, in its transaction.

One state change, end to end:

1. A service (``tasks.services``) locks the task, sets the new values and calls
   ``task.save()`` inside ``audited(actor, channel=..., reason=...)``.
2. ``Task.save()`` (``tasks.models``) re-reads the committed values under the row
   lock, refuses an undeclared transition, and keeps them on the instance.
3. Before the INSERT/UPDATE, ``prepare_row`` diffs the tracked fields against
   those values, names the actor, channel and reason of the ``audited`` block,
   chains the row to the task's previous one by HMAC under the newest audit key
   (``tasks.keys``, its id stored in the row) and compiles its INSERT
   (a save with no audit context is refused here: ``MissingAuditContext``).
4. After it, ``append_row`` runs that INSERT: the change and its row commit together.

The receivers below are the only glue to Django's signals; ``connect()`` is
called from ``TasksConfig.ready()``. Below the ORM, database triggers keep the
rows append-only (``tasks.db_triggers``).
"""

from collections.abc import Iterable, Mapping, Sequence
from itertools import zip_longest
from typing import Any, NamedTuple

from django.db import connections, models
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from tasks import hooks
from tasks.audit import (
    GENESIS_HASH,
    AuditContext,
    HistoryEvent,
    active_context,
    current_context,
    digest,
    is_loading_rows,
    legacy_row_hash,
    row_hash,
    same_json,
    to_jsonable,
)
from tasks.exceptions import MissingAuditContext
from tasks.keys import current_key_id
from tasks.models import DIGESTED_FIELDS, Task, TaskHistory
from tasks.redaction import redact_fields
from tasks.states import TaskState, check_state

_PENDING = "_pending_history"


def _changes(instance: Task, before: dict[str, Any] | None, update_fields: Any) -> dict[str, Any]:
    """The tracked fields a save changes, ``[old, new]`` each (digests for large values); a new task's values."""
    if before is None:
        return _created_values(instance, _tracked_defaults())
    changes: dict[str, Any] = {}
    for field in Task.tracked_fields():
        if update_fields is not None and field.name not in update_fields:
            continue
        old, new = before[field.attname], getattr(instance, field.attname)
        if same_json(old, new):  # most fields of a change: spared two conversions (a JSON value's, a round trip)
            continue
        old, new = to_jsonable(old), to_jsonable(new)
        if same_json(old, new):  # not ``==``, for which 1, 1.0 and True are one value: JSON tells them apart
            continue
        if field.name in DIGESTED_FIELDS:
            old, new = (None if old is None else digest(old)), (None if new is None else digest(new))
        changes[field.name] = [old, new]
    return changes


class _TrackedDefault(NamedTuple):
    field: models.Field
    value: Any  # as the field gives it
    json: Any  # as the history records it


def _tracked_defaults() -> list[_TrackedDefault]:
    """The tracked fields with their defaults, now: what a created row leaves out (the state aside)."""
    defaults = []
    for field in Task.tracked_fields():
        value = field.get_default()
        defaults.append(_TrackedDefault(field, value, to_jsonable(value)))
    return defaults


def _created_values(instance: Task, defaults: Sequence[_TrackedDefault]) -> dict[str, Any]:
    """A new task's tracked values that are not their defaults (``_tracked_defaults()``, computed once for many
    tasks). A value equal to its default and of its type is left out before it is converted to JSON: most are."""
    changes: dict[str, Any] = {}
    for field, default, default_json in defaults:
        value = getattr(instance, field.attname)
        if field.name != "state" and type(value) is type(default) and value == default:
            continue
        new = to_jsonable(value)
        if field.name != "state" and new == default_json:
            continue
        changes[field.name] = digest(new) if field.name in DIGESTED_FIELDS else new
    return changes


def _event(before: dict[str, Any] | None, instance: Task) -> str:
    if before is None:
        return HistoryEvent.CREATED
    if before["state"] != instance.state:
        return HistoryEvent.TRANSITION
    if before["deleted_at"] is None and instance.deleted_at is not None:
        return HistoryEvent.SOFT_DELETE
    if before["deleted_at"] is not None and instance.deleted_at is None:
        return HistoryEvent.RESTORE
    return HistoryEvent.EDIT


def prepare_row(instance: Task, *, raw: bool, update_fields: Any, using: str) -> None:
    """Compile the history row of the change about to be saved (or refuse a save that escapes the audit)."""
    if raw and is_loading_rows():
        setattr(instance, _PENDING, None)
        return
    if raw or not hasattr(instance, "_audit_before"):
        raise MissingAuditContext("tasks are saved only through Task.save() inside an audited block")
    before = instance._audit_before
    changes = _changes(instance, before, update_fields)
    ctx: AuditContext | None
    if changes or before is None:
        ctx = current_context()
    else:
        # Nothing tracked changed: a row only if an audited block asked for its event.
        ctx = active_context()
        if ctx is None or ctx.event is None:
            setattr(instance, _PENDING, None)
            return
    row = _chained_row(instance, before, changes, ctx, to_jsonable(ctx.details))
    setattr(instance, _PENDING, TaskHistory(**row).compiled_insert(using))


def _chained_row(
    instance: Task,
    before: dict[str, Any] | None,
    changes: dict[str, Any],
    ctx: AuditContext,
    details: dict[str, Any],
    reason: str | None = None,
) -> dict[str, Any]:
    """The values of the history row of one change, chained by HMAC to the task's previous row; the task's chain
    head follows it. ``details``: the audit context's, as JSON (``changes``, already JSON, joins them)."""
    seq = 1 if before is None else before["history_count"] + 1
    prev_hash = GENESIS_HASH if before is None else before["history_head"]
    event = ctx.event or _event(before, instance)
    # A failed attempt: the task failed, or went back to queued to wait for its retry.
    failed = event == HistoryEvent.TRANSITION and (
        instance.state == TaskState.FAILED
        or (before is not None and (before["state"], instance.state) == (TaskState.RUNNING, TaskState.QUEUED))
    )
    row: dict[str, Any] = {
        "task_id": instance.pk,
        "seq": seq,
        "event": event,
        "state_from": "" if before is None else before["state"],
        "state_to": instance.state,
        "actor": ctx.actor,
        "actor_user_id": ctx.user_id,
        "channel": ctx.channel,
        "reason": ctx.reason if reason is None else reason,
        "error_message": instance.last_error if failed else "",
        # The state's change is the row's own state_from and state_to: not written twice.
        "details": {**details, "changes": {name: change for name, change in changes.items() if name != "state"}},
        "created_at": timezone.now(),
        "key_id": current_key_id(),
    }
    row["hash"] = row_hash(prev_hash, row)
    instance.history_count, instance.history_head = seq, row["hash"]
    return row


def create_tasks(tasks: Sequence[Task], *, reasons: Sequence[str | None] = (), using: str = "default") -> None:
    """Insert new tasks with their first history rows: two multi-row INSERTs, in the caller's transaction.

    What ``Task.save()`` and its signals do for one new task (a declared state, an audit context, credentials
    redacted, the created row chained from genesis), for many at once: a batch submit. ``reasons``, by position,
    overrides the audited block's reason for a task (None: the block's). Every row's values are prepared before
    the first statement, so SQLite's write lock is held for the INSERTs alone (crux/db/base.py).
    ``hooks.tasks_created`` then lets the mirror copy them after commit, as ``post_save`` does for one.
    """
    ctx = current_context()
    defaults = _tracked_defaults()
    details = to_jsonable(ctx.details)
    rows = []
    for task, reason in zip_longest(tasks, reasons[: len(tasks)]):
        check_state(task.state)
        redact_fields(task)
        task._prepare_related_fields_for_save(operation_name="create_tasks")  # type: ignore[union-attr]  # unstubbed
        rows.append(_chained_row(task, None, _created_values(task, defaults), ctx, details, reason))
    connection = connections[using]
    task_fields = Task._meta.concrete_fields
    stamped = [f.attname for f in task_fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    now = timezone.now()  # the auto_now stamp (updated_at) of the batch, as at its INSERT: after every created_at
    for task in tasks:
        for attname in stamped:
            setattr(task, attname, now)
    history_fields = [field for field in TaskHistory._meta.concrete_fields if not field.primary_key]
    task_values = _db_values(connection, task_fields, ([getattr(t, f.attname) for f in task_fields] for t in tasks))
    history_values = _db_values(connection, history_fields, ([r[f.attname] for f in history_fields] for r in rows))
    insert_rows(connection, Task, task_fields, task_values)
    insert_rows(connection, TaskHistory, history_fields, history_values)
    for task in tasks:
        task._state.adding, task._state.db = False, using
    hooks.tasks_created.send(sender=Task, tasks=tasks, using=using)


# Values already in their column's type, which ``Field.get_db_prep_save`` returns as they are (by the column's
# internal type; None goes as it is to every column): most of a new task's.
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("CharField", "TextField"), (str,)),
    **dict.fromkeys(
        (
            "AutoField",
            "BigAutoField",
            "IntegerField",
            "BigIntegerField",
            "SmallIntegerField",
            "PositiveIntegerField",
            "PositiveBigIntegerField",
            "PositiveSmallIntegerField",
        ),
        (int,),
    ),
    "BooleanField": (bool,),
    "FloatField": (float,),
}


def _db_values(connection: Any, fields: Sequence[models.Field], rows: Iterable[list[Any]]) -> list[list[Any]]:
    """Each row's values (in ``fields`` order) as ``bulk_create`` sends them (``get_db_prep_save``), without its
    per-column work where the result is known: a value already in its column's type goes as it is, and a
    hashable one (a default, the batch's time) is prepared once per distinct value."""
    plain = [
        _PLAIN_TYPES.get((f.target_field if isinstance(f, models.ForeignKey) else f).get_internal_type(), ())
        for f in fields
    ]
    columns = [(index, field, types) for index, (field, types) in enumerate(zip(fields, plain, strict=True))]
    prepared: dict[tuple[int, type, Any], Any] = {}
    result = []
    for row in rows:
        for index, field, types in columns:
            value = row[index]
            if value is None or type(value) in types:
                continue
            if type(value).__hash__ is None:  # JSON: a dict or a list
                row[index] = field.get_db_prep_save(value, connection)
                continue
            key = (index, type(value), value)
            if key not in prepared:
                prepared[key] = field.get_db_prep_save(value, connection)
            row[index] = prepared[key]
        result.append(row)
    return result


def insert_rows(
    connection: Any, model: type[models.Model], fields: Sequence[models.Field], rows: list[list[Any]]
) -> None:
    """Insert prepared rows: PostgreSQL, by ``COPY ... FROM STDIN`` (its rows formatted by psycopg's C code, where
    an INSERT's parameters would be quoted in Python); otherwise multi-row ``VALUES``, as many a statement as the
    parameter limit allows. Either way every index, trigger and constraint of the table applies, as to an INSERT."""
    if not rows:
        return
    quote = connection.ops.quote_name
    table, columns = quote(model._meta.db_table), ", ".join(quote(field.column) for field in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        per_statement = max(1, (connection.features.max_query_params or len(rows) * len(fields)) // len(fields))
        row_sql = f"({', '.join(['%s'] * len(fields))})"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))}"
            cursor.execute(sql, [value for row in chunk for value in row])


def resign_legacy_chain(rows: Sequence[Mapping[str, Any]], head: tuple[int, str]) -> list[dict[str, Any]] | None:
    """An unkeyed (sha256) chain re-signed with the newest audit key; None if it does not verify end to end.

    Anyone can recompute an unkeyed chain, so it is re-signed only where a record beyond an attacker's reach
    vouches for its end, ``head`` (count, hash): the task rows at the keying migration, a signed tombstone for
    an archive of that era. A chain that fails stays as it is, and ``verify_audit`` names it.
    """
    prev = GENESIS_HASH
    for seq, row in enumerate(rows, start=1):
        # An archive of that era holds each row's prev_hash too; the rows read today derive it.
        if row["seq"] != seq or row.get("prev_hash", prev) != prev or legacy_row_hash(prev, row) != row["hash"]:
            return None
        prev = row["hash"]
    if not rows or (len(rows), prev) != tuple(head):
        return None
    key_id, prev, signed = current_key_id(), GENESIS_HASH, []
    for row in rows:
        link = row_hash(prev, {**row, "key_id": key_id})
        signed.append({**row, "key_id": key_id, "prev_hash": prev, "hash": link})
        prev = link
    return signed


def append_row(instance: Task, *, using: str) -> None:
    """Insert the row ``prepare_row`` compiled, in the same transaction as the task's own write."""
    compiled = instance.__dict__.pop(_PENDING, None)
    if compiled is not None:
        TaskHistory.run_insert(using, compiled)


def _on_pre_save(sender: type[Task], instance: Task, raw: bool, update_fields: Any, using: str, **kwargs: Any) -> None:
    prepare_row(instance, raw=raw, update_fields=update_fields, using=using)


def _on_post_save(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    append_row(instance, using=using)


def connect() -> None:
    pre_save.connect(_on_pre_save, sender=Task, dispatch_uid="tasks.history.prepare_row")
    post_save.connect(_on_post_save, sender=Task, dispatch_uid="tasks.history.append_row")
