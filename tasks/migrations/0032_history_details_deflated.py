"""A history row's details are stored deflated against a preset dictionary where that is shorter (issue 16,
storage: ``tasks.models.DeflatedJSONField``). No value a link covers changes, so every chain verifies as before.
The append-only triggers are dropped for the change and re-installed after it.

PostgreSQL converts the column in place (``jsonb`` to ``bytea``: its text as UTF-8). SQLite rebuilds the table
without the JSON_VALID check (a deflated value is a BLOB); rows, ids and indexes as they were. Then the rows
already stored are deflated where that is shorter, as new rows are. Undone, deflated values are written back as
their JSON text first.
"""

import json

from django.db import migrations, models

import tasks.models
from tasks import db_triggers

BATCH = 2000
# The rows whose details are JSON text, and those deflated: a BLOB on SQLite; on PostgreSQL, bytes that start with
# the tag (1).
PLAIN = {
    "sqlite": "SELECT id, details FROM tasks_taskhistory WHERE typeof(details) = 'text'",
    "postgresql": "SELECT id, details FROM tasks_taskhistory WHERE get_byte(details, 0) <> 1",
}
DEFLATED = {
    "sqlite": "SELECT id, details FROM tasks_taskhistory WHERE typeof(details) = 'blob'",
    "postgresql": "SELECT id, details FROM tasks_taskhistory WHERE get_byte(details, 0) = 1",
}


def _field(deflated: bool, model) -> models.Field:
    field = tasks.models.DeflatedJSONField if deflated else models.JSONField
    named = field(default=dict, blank=True)
    named.set_attributes_from_name("details")
    named.model = model
    return named


def deflate_column(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_taskhistory ALTER COLUMN details TYPE bytea USING convert_to(details::text, 'UTF8')"
        )
    else:
        model = apps.get_model("tasks", "TaskHistory")
        schema_editor.alter_field(model, _field(False, model), _field(True, model))
    _rewrite(connection, PLAIN[connection.vendor], deflated=True)


def _rewrite(connection, select: str, *, deflated: bool) -> None:
    """Store again the details of the rows ``select`` finds (id, details): deflated where that is shorter, or as
    their JSON text; a batch of rows at a time, by id."""
    field = tasks.models.DeflatedJSONField()
    after = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"{select} AND id > %s ORDER BY id LIMIT {BATCH}", [after])
            rows = cursor.fetchall()
            if not rows:
                return
            after = rows[-1][0]
            changed = []
            for row_id, stored in rows:
                value = field.from_db_value(stored, None, connection)
                if deflated:
                    new = field.get_db_prep_value(value, connection)
                    if isinstance(new, str) or not new.startswith(field.TAG):
                        continue  # deflating would not shorten it: its text stays
                else:
                    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                    new = text if connection.vendor == "sqlite" else text.encode()
                changed.append([new, row_id])
            cursor.executemany("UPDATE tasks_taskhistory SET details = %s WHERE id = %s", changed)


def inflate_column(apps, schema_editor):
    connection = schema_editor.connection
    _rewrite(connection, DEFLATED[connection.vendor], deflated=False)
    if connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_taskhistory ALTER COLUMN details TYPE jsonb USING convert_from(details, 'UTF8')::jsonb"
        )
        return
    model = apps.get_model("tasks", "TaskHistory")
    schema_editor.alter_field(model, _field(True, model), _field(False, model))


def uninstall(apps, schema_editor):
    db_triggers.uninstall(schema_editor.connection)


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0031_task_celery_id_derived")]

    operations = [
        migrations.RunPython(uninstall, install),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(deflate_column, inflate_column)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskhistory",
                    name="details",
                    field=tasks.models.DeflatedJSONField(blank=True, default=dict),
                ),
            ],
        ),
        migrations.RunPython(install, uninstall),
    ]
