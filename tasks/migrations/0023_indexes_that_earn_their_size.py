"""Indexes that earn their size (issue 16, storage).

- ``task_role``: a role alone is a list filter, but the list reads in creation order; the index on
  ``(provider, role, created)`` serves provider and role, and the creation-order indexes serve a role alone.
- ``history_actor_user``: no query reads the history by user.
- ``output_task_order`` becomes a ``KeyOrderIndex``: on SQLite it leaves out the trailing id, which is the rowid
  every entry holds already (the same order). PostgreSQL's index is unchanged and is not rebuilt.
"""

from django.db import migrations, models

import tasks.models

OLD_OUTPUT_INDEX = models.Index(fields=["task", "id"], name="output_task_order")
NEW_OUTPUT_INDEX = tasks.models.KeyOrderIndex(fields=["task", "id"], name="output_task_order")


def _swap(apps, schema_editor, old: models.Index, new: models.Index) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    model = apps.get_model("tasks", "TaskOutput")
    schema_editor.remove_index(model, old)
    schema_editor.add_index(model, new)


def narrow_output_index(apps, schema_editor):
    _swap(apps, schema_editor, OLD_OUTPUT_INDEX, NEW_OUTPUT_INDEX)


def widen_output_index(apps, schema_editor):
    _swap(apps, schema_editor, NEW_OUTPUT_INDEX, OLD_OUTPUT_INDEX)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0022_history_choices_as_codes")]

    operations = [
        migrations.RemoveIndex(model_name="task", name="task_role"),
        migrations.RemoveIndex(model_name="taskhistory", name="history_actor_user"),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(narrow_output_index, widen_output_index)],
            state_operations=[
                migrations.RemoveIndex(model_name="taskoutput", name="output_task_order"),
                migrations.AddIndex(model_name="taskoutput", index=NEW_OUTPUT_INDEX),
            ],
        ),
    ]
