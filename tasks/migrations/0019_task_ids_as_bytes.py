"""Task ids as their 16 bytes on SQLite (issue 16, storage): ``tasks.models.CompactUUIDField``.

Django keeps a UUID as 32 hex digits on SQLite; the task's id, every column that refers to it (history, outputs,
purge grants, idempotency keys, CLI commands) and the indexes over them hold it 6 to 7 times per completed task.
The columns keep their declared type (``char(32)``, whose text affinity stores a BLOB as it is): each value is
rewritten in place, no table is remade, the rowids (the search index's keys) stay. The history's append-only
triggers are dropped for the rewrite and re-installed after it. PostgreSQL's ``uuid`` is 16 bytes already: nothing
to do there.
"""

import uuid

from django.db import migrations

import tasks.models
from tasks import db_triggers


def _task_id_columns(apps) -> list[tuple[str, str]]:
    """(table, column) of the task's id and of every column holding one."""
    task = apps.get_model("tasks", "Task")
    grant = apps.get_model("tasks", "HistoryPurgeGrant")
    columns = [(task._meta.db_table, task._meta.pk.column), (grant._meta.db_table, grant._meta.pk.column)]
    for model in apps.get_models():
        columns.extend(
            (model._meta.db_table, field.column)
            for field in model._meta.concrete_fields
            if field.is_relation and field.related_model is task
        )
    return columns


def _as_bytes(value):
    return uuid.UUID(value).bytes if isinstance(value, str) else value


def _as_hex(value):
    return uuid.UUID(bytes=bytes(value)).hex if isinstance(value, bytes) else value


def _rewrite(apps, schema_editor, convert, stored_as: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    connection.ensure_connection()
    connection.connection.create_function("crux_task_id", 1, convert, deterministic=True)
    quote = schema_editor.quote_name
    db_triggers.uninstall(connection)
    for table, column in _task_id_columns(apps):
        schema_editor.execute(
            f"UPDATE {quote(table)} SET {quote(column)} = crux_task_id({quote(column)}) "
            f"WHERE typeof({quote(column)}) = '{stored_as}'"
        )
    db_triggers.install(connection)


def to_bytes(apps, schema_editor):
    _rewrite(apps, schema_editor, _as_bytes, "text")


def to_hex(apps, schema_editor):
    _rewrite(apps, schema_editor, _as_hex, "blob")


class Migration(migrations.Migration):
    dependencies = [("tasks", "0018_output_index_by_id")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_bytes, to_hex)],
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="id",
                    field=tasks.models.CompactUUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                migrations.AlterField(
                    model_name="historypurgegrant",
                    name="task_id",
                    field=tasks.models.CompactUUIDField(primary_key=True, serialize=False),
                ),
            ],
        ),
    ]
