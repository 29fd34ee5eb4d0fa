"""A history row's event, states and channel as one character on SQLite (issue 16, storage):
``tasks.models.CodedChoiceField``.

Each name (8 to 11 characters) becomes its position in the field's codes, about 23 bytes a history row. The columns
keep their declared type; values are rewritten in place (the table is not remade), with the history's append-only
triggers dropped for the rewrite and re-installed after it. The chain is computed over the names, which every read
gives back: no link changes. PostgreSQL keeps the names.
"""

from django.db import migrations

import tasks.models
from tasks import db_triggers

CODE_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What each code means, as this migration wrote them: append only.
EVENT_CODES = ("created", "transition", "edit", "soft_delete", "restore", "unarchive")
STATE_CODES = ("pending", "queued", "running", "completed", "failed", "cancelled", "interrupted")
CHANNEL_CODES = ("api", "admin", "worker", "command", "recovery", "retention", "system", "shell", "schedule", "celery")
CODED_COLUMNS = {"event": EVENT_CODES, "state_from": STATE_CODES, "state_to": STATE_CODES, "channel": CHANNEL_CODES}


def _rewrite(schema_editor, *, to_codes: bool) -> None:
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    connection.ensure_connection()
    quote = schema_editor.quote_name
    db_triggers.uninstall(connection)
    for column, codes in CODED_COLUMNS.items():
        mapping = {name: CODE_DIGITS[index] for index, name in enumerate(codes)}
        if not to_codes:
            mapping = {code: name for name, code in mapping.items()}
        cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in mapping.items())
        schema_editor.execute(
            f"UPDATE tasks_taskhistory SET {quote(column)} = CASE {quote(column)} {cases} END "
            f"WHERE {quote(column)} IN ({', '.join(repr(old) for old in mapping)})"
        )
    db_triggers.install(connection)


def to_codes(apps, schema_editor):
    _rewrite(schema_editor, to_codes=True)


def to_names(apps, schema_editor):
    _rewrite(schema_editor, to_codes=False)


def _field(choices, codes, **kwargs):
    return tasks.models.CodedChoiceField(choices=choices, codes=codes, max_length=16, **kwargs)


STATE_CHOICES = [
    ("pending", "Pending"),
    ("queued", "Queued"),
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    ("interrupted", "Interrupted"),
]


class Migration(migrations.Migration):
    dependencies = [("tasks", "0021_deleted_by_where_set")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_codes, to_names)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskhistory",
                    name="channel",
                    field=_field(
                        [
                            ("api", "API"),
                            ("admin", "Admin"),
                            ("worker", "Worker"),
                            ("command", "Management command"),
                            ("recovery", "Recovery"),
                            ("retention", "Retention"),
                            ("system", "System"),
                            ("shell", "Shell"),
                            ("schedule", "Periodic schedule"),
                            ("celery", "Celery control (revoke, terminate)"),
                        ],
                        CHANNEL_CODES,
                    ),
                ),
                migrations.AlterField(
                    model_name="taskhistory",
                    name="event",
                    field=_field(
                        [
                            ("created", "Created"),
                            ("transition", "State transition"),
                            ("edit", "Edit"),
                            ("soft_delete", "Soft delete"),
                            ("restore", "Restore"),
                            ("unarchive", "Restored from purge archive"),
                        ],
                        EVENT_CODES,
                    ),
                ),
                migrations.AlterField(
                    model_name="taskhistory",
                    name="state_from",
                    field=_field(STATE_CHOICES, STATE_CODES, blank=True),
                ),
                migrations.AlterField(
                    model_name="taskhistory",
                    name="state_to",
                    field=_field(STATE_CHOICES, STATE_CODES),
                ),
            ],
        ),
    ]
