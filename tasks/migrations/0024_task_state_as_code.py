"""A task's state as one character on SQLite (issue 16, storage): ``tasks.models.CodedChoiceField``.

The name (6 to 11 characters) becomes its code in the task's row and in the index on (state, created), about 16
bytes a task. The codes follow the names' order, so ordering by state is the same on both engines. Values are
rewritten in place (the table is not remade: the search index is keyed by its rowids, and no trigger reads the
state). The partial indexes whose condition names a state are made again around the rewrite, with the code in their
condition: a query's ``state = %s`` is compiled with the code too. PostgreSQL keeps the names.
"""

from django.db import migrations

import tasks.models

CODE_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What each code means, as this migration wrote them: append only.
TASK_STATE_CODES = ("cancelled", "completed", "failed", "interrupted", "pending", "queued", "running")


# The partial indexes whose condition names a state.
STATE_INDEXES = ("task_running_lease", "task_queued_dispatch", "task_queued_epoch", "task_queued_due")


def _state_indexes(apps):
    """The task's model in ``apps`` and its indexes whose condition names a state."""
    model = apps.get_model("tasks", "Task")
    return model, [index for index in model._meta.indexes if index.name in STATE_INDEXES]


def _rewrite(schema_editor, *, to_codes: bool) -> None:
    mapping = {name: CODE_DIGITS[index] for index, name in enumerate(TASK_STATE_CODES)}
    if not to_codes:
        mapping = {code: name for name, code in mapping.items()}
    cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in mapping.items())
    schema_editor.execute(
        f"UPDATE tasks_task SET state = CASE state {cases} END "
        f"WHERE state IN ({', '.join(repr(old) for old in mapping)})"
    )


def drop_state_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        model, indexes = _state_indexes(apps)
        for index in indexes:
            schema_editor.remove_index(model, index)


def create_state_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        model, indexes = _state_indexes(apps)
        for index in indexes:
            schema_editor.add_index(model, index)


def to_codes(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        _rewrite(schema_editor, to_codes=True)
        create_state_indexes(apps, schema_editor)


def to_names(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        drop_state_indexes(apps, schema_editor)
        _rewrite(schema_editor, to_codes=False)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0023_indexes_that_earn_their_size")]

    operations = [
        # The partial indexes are dropped while the state is still a name (and made again from it on the way back).
        migrations.RunPython(drop_state_indexes, create_state_indexes),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="state",
                    field=tasks.models.CodedChoiceField(
                        choices=[
                            ("pending", "Pending"),
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                            ("interrupted", "Interrupted"),
                        ],
                        codes=TASK_STATE_CODES,
                        default="pending",
                        max_length=16,
                    ),
                )
            ]
        ),
        # Rewritten to codes, then the partial indexes made again from the coded field.
        migrations.RunPython(to_codes, to_names),
    ]
