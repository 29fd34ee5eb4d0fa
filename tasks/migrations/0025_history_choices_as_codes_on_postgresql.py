"""A history row's event, states and channel as one character on PostgreSQL too (issue 16, storage), as migration
0022 made them on SQLite: ``tasks.models.CodedChoiceField`` with ``coded_on`` naming both engines.

On PostgreSQL each name (3 to 11 characters) becomes its code: 106 bytes a completed task of the benchmark's data set
(four history rows, 886 → 780 bytes of table). Values are rewritten in place, with the history's append-only
triggers dropped for the rewrite and re-installed after it. The chain is computed over the names, which every read
gives back: no link changes. SQLite holds the codes already; nothing is done there. A task's own state keeps its
name on PostgreSQL.
"""

from django.db import migrations

import tasks.models
from tasks import db_triggers

CODE_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What each code means, as migration 0022 wrote them: append only.
EVENT_CODES = ("created", "transition", "edit", "soft_delete", "restore", "unarchive")
STATE_CODES = ("pending", "queued", "running", "completed", "failed", "cancelled", "interrupted")
CHANNEL_CODES = ("api", "admin", "worker", "command", "recovery", "retention", "system", "shell", "schedule", "celery")
CODED_COLUMNS = {"event": EVENT_CODES, "state_from": STATE_CODES, "state_to": STATE_CODES, "channel": CHANNEL_CODES}
CODED_ON = ("sqlite", "postgresql")


def _rewrite(schema_editor, *, to_codes: bool) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    db_triggers.uninstall(connection)
    assignments, conditions = [], []
    for column, codes in CODED_COLUMNS.items():
        mapping = {name: CODE_DIGITS[index] for index, name in enumerate(codes)}
        if not to_codes:
            mapping = {code: name for name, code in mapping.items()}
        cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in mapping.items())
        assignments.append(f"{quote(column)} = CASE {quote(column)} {cases} ELSE {quote(column)} END")
        conditions.append(f"{quote(column)} IN ({', '.join(repr(old) for old in mapping)})")
    # One UPDATE: each row is written once (a new version of it, on PostgreSQL), not once per column.
    schema_editor.execute(f"UPDATE tasks_taskhistory SET {', '.join(assignments)} WHERE {' OR '.join(conditions)}")
    db_triggers.install(connection)


def to_codes(apps, schema_editor):
    _rewrite(schema_editor, to_codes=True)


def to_names(apps, schema_editor):
    _rewrite(schema_editor, to_codes=False)


def _field(choices, codes, **kwargs):
    return tasks.models.CodedChoiceField(choices=choices, codes=codes, coded_on=CODED_ON, max_length=16, **kwargs)


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
    dependencies = [("tasks", "0024_task_state_as_code")]

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
