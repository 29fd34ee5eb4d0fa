"""The system components that write a history row to many tasks stored as a code in the row's ``actor`` (issue 16,
storage): ``tasks.models.CodedNameField`` with ``tasks.audit.SYSTEM_ACTORS``. 'system:worker', which names two or
three rows of every task a worker ran, becomes one control character on both engines; every other actor (a user's
name) is stored as it was. Values are rewritten in place, with the history's append-only triggers dropped for the
rewrite and re-installed after it. The chain is computed over the names, which every read gives back.
"""

from django.db import migrations

import tasks.models
from tasks import db_triggers

# What each code means, as this migration wrote them: append only.
SYSTEM_ACTORS = ("system:worker", "system:recovery", "celery:revoke")
CODE_DIGITS = "".join(map(chr, range(1, 32)))


def _rewrite(schema_editor, *, to_codes: bool) -> None:
    connection = schema_editor.connection
    mapping = {name: CODE_DIGITS[index] for index, name in enumerate(SYSTEM_ACTORS)}
    if not to_codes:
        mapping = {code: name for name, code in mapping.items()}
    cases = " ".join(["WHEN %s THEN %s"] * len(mapping))
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:  # one pass over the table: each row is written once
        cursor.execute(
            f"UPDATE tasks_taskhistory SET actor = CASE actor {cases} END "
            f"WHERE actor IN ({', '.join(['%s'] * len(mapping))})",
            [value for pair in mapping.items() for value in pair] + list(mapping),
        )
    db_triggers.install(connection)


def to_codes(apps, schema_editor):
    _rewrite(schema_editor, to_codes=True)


def to_names(apps, schema_editor):
    _rewrite(schema_editor, to_codes=False)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0026_output_type_as_code")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_codes, to_names)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskhistory",
                    name="actor",
                    field=tasks.models.CodedNameField(
                        codes=SYSTEM_ACTORS, coded_on=("sqlite", "postgresql"), max_length=150
                    ),
                ),
            ],
        ),
    ]
