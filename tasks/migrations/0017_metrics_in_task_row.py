"""A task's metrics in its own row, its chain head as 32 bytes (issue 16, storage).

The metrics had a table of their own (a row per task that ran: its key, a second copy of the task id in an index,
its own ``updated_at``): they become seven columns of the task, written by the attempt's outcome in the UPDATE it
makes anyway. The values are copied over before the table is dropped (backwards: copied back, one row per task that
has a figure, stamped with the task's ``updated_at``). ``history_head`` (the last history row's hash) is stored as
its 32 bytes, as the rows' hashes are (0014), and read as the same hex text.

Adding and altering columns remakes tasks_task on SQLite, which drops the search index's triggers: they are
installed again and the index rebuilt (tasks/db_triggers.py, install_search), both ways.
"""

from django.db import migrations, models

import tasks.models
from tasks import db_triggers

METRIC_COLUMNS = (
    "processing_time_seconds",
    "iterations",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "stop_reason",
    "converged",
)
_COLUMNS = ", ".join(METRIC_COLUMNS)


def reinstall_search(apps, schema_editor):
    db_triggers.install_search(schema_editor.connection)


def metrics_into_tasks(apps, schema_editor):
    schema_editor.execute(
        f"UPDATE tasks_task SET ({_COLUMNS}) = "
        f"(SELECT {_COLUMNS} FROM tasks_taskmetrics m WHERE m.task_id = tasks_task.id) "
        "WHERE id IN (SELECT task_id FROM tasks_taskmetrics)"
    )


def metrics_out_of_tasks(apps, schema_editor):
    some_figure = " OR ".join(
        f"{name} <> ''" if name == "stop_reason" else f"{name} IS NOT NULL" for name in METRIC_COLUMNS
    )
    schema_editor.execute(
        f"INSERT INTO tasks_taskmetrics (task_id, {_COLUMNS}, updated_at) "
        f"SELECT id, {_COLUMNS}, updated_at FROM tasks_task WHERE {some_figure}"
    )


def _head_field(digest: bool) -> models.Field:
    field = (
        tasks.models.DigestField(blank=True, editable=False)
        if digest
        else models.CharField(max_length=64, blank=True, editable=False)
    )
    field.set_attributes_from_name("history_head")
    return field


def _convert_sqlite(schema_editor, function: str, convert) -> None:
    connection = schema_editor.connection
    connection.ensure_connection()
    connection.connection.create_function(function, 1, convert, deterministic=True)
    schema_editor.execute(f"UPDATE tasks_task SET history_head = {function}(history_head)")


def _unhex(value):
    return bytes.fromhex(value) if isinstance(value, str) else value


def _hex(value):
    return bytes(value).hex() if isinstance(value, (bytes, memoryview)) else value


def _alter_head(apps, schema_editor, digest: bool) -> None:
    model = apps.get_model("tasks", "Task")
    before, after = _head_field(not digest), _head_field(digest)
    before.model = after.model = model
    schema_editor.alter_field(model, before, after)


def head_to_bytes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_task ALTER COLUMN history_head TYPE bytea USING decode(history_head, 'hex')"
        )
        return
    _alter_head(apps, schema_editor, digest=True)
    _convert_sqlite(schema_editor, "crux_unhex", _unhex)


def head_to_hex(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_task ALTER COLUMN history_head TYPE varchar(64) USING encode(history_head, 'hex')"
        )
        return
    _convert_sqlite(schema_editor, "crux_hex", _hex)
    _alter_head(apps, schema_editor, digest=False)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0016_history_indexes")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, reinstall_search),
        migrations.AddField(
            model_name="task", name="processing_time_seconds", field=models.FloatField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="task", name="iterations", field=models.PositiveIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="task", name="prompt_tokens", field=models.PositiveBigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="task", name="completion_tokens", field=models.PositiveBigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="task", name="total_tokens", field=models.PositiveBigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(model_name="task", name="stop_reason", field=models.CharField(blank=True, max_length=64)),
        migrations.AddField(model_name="task", name="converged", field=models.BooleanField(blank=True, null=True)),
        migrations.RunPython(metrics_into_tasks, metrics_out_of_tasks),
        migrations.DeleteModel(name="TaskMetrics"),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(head_to_bytes, head_to_hex)],
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="history_head",
                    field=tasks.models.DigestField(blank=True, editable=False),
                ),
            ],
        ),
        migrations.RunPython(reinstall_search, migrations.RunPython.noop),
    ]
