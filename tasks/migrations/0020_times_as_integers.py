"""Times as integers on SQLite (issue 16, storage): ``tasks.models.CompactDateTimeField``.

Django keeps a time as 26 characters of text on SQLite; a completed task holds one in up to nine columns of its row,
one in each history row and output, and five indexes lead or end with its creation time. Each becomes the
microseconds since the Unix epoch (UTC) in an integer: values are rewritten in place (the columns keep their
declared type, whose numeric affinity stores an integer as it is), no table is remade and the rowids (the search
index's keys) stay. The history's append-only triggers are dropped for the rewrite and re-installed after it.
PostgreSQL's ``timestamptz`` is 8 bytes already: nothing to do there.
"""

from datetime import datetime, timedelta

import django.utils.timezone
from django.db import migrations
from django.utils.dateparse import parse_datetime

import tasks.models
from tasks import db_triggers

# The columns this migration rewrites, as they are at this point of the project's history.
TIME_COLUMNS = {
    "task": (
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "dispatched_at",
        "run_after",
        "lease_expires_at",
        "heartbeat_at",
        "deleted_at",
    ),
    "taskhistory": ("created_at",),
    "taskoutput": ("created_at",),
}
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _as_integer(text):
    """Django's text of a naive UTC time as microseconds since the epoch."""
    return (parse_datetime(text).replace(tzinfo=None) - _EPOCH) // _MICROSECOND


def _as_text(microseconds):
    """Microseconds since the epoch as the text Django writes for a naive UTC time."""
    return str(_EPOCH + timedelta(microseconds=microseconds))


def _rewrite(apps, schema_editor, convert, stored_as: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    connection.ensure_connection()
    connection.connection.create_function("crux_time", 1, convert, deterministic=True)
    quote = schema_editor.quote_name
    db_triggers.uninstall(connection)
    for model_name, fields in TIME_COLUMNS.items():
        model = apps.get_model("tasks", model_name)
        table = quote(model._meta.db_table)
        for name in fields:
            column = quote(model._meta.get_field(name).column)
            schema_editor.execute(
                f"UPDATE {table} SET {column} = crux_time({column}) WHERE typeof({column}) = '{stored_as}'"
            )
    db_triggers.install(connection)


def to_integers(apps, schema_editor):
    _rewrite(apps, schema_editor, _as_integer, "text")


def to_text(apps, schema_editor):
    _rewrite(apps, schema_editor, _as_text, "integer")


class Migration(migrations.Migration):
    dependencies = [("tasks", "0019_task_ids_as_bytes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_integers, to_text)],
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="completed_at",
                    field=tasks.models.CompactDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="created_at",
                    field=tasks.models.CompactDateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="deleted_at",
                    field=tasks.models.CompactDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="dispatched_at",
                    field=tasks.models.CompactDateTimeField(
                        blank=True, help_text="Last time it was published to Celery.", null=True
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="heartbeat_at",
                    field=tasks.models.CompactDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="lease_expires_at",
                    field=tasks.models.CompactDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="run_after",
                    field=tasks.models.CompactDateTimeField(
                        blank=True, help_text="Not started before this time.", null=True
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="started_at",
                    field=tasks.models.CompactDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="updated_at",
                    field=tasks.models.CompactDateTimeField(auto_now=True),
                ),
                migrations.AlterField(
                    model_name="taskhistory",
                    name="created_at",
                    field=tasks.models.CompactDateTimeField(),
                ),
                migrations.AlterField(
                    model_name="taskoutput",
                    name="created_at",
                    field=tasks.models.CompactDateTimeField(default=django.utils.timezone.now),
                ),
            ],
        ),
    ]
