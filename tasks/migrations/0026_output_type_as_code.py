"""An output's type as one character on both engines (issue 16, storage): ``tasks.models.CodedChoiceField``, as a
history row's choices are. Each name ('stdout', 'log', ...) becomes its position in ``OUTPUT_TYPE_CODES``; values are
rewritten in place (outputs have no triggers) and read back as the names.
"""

from django.db import migrations

import tasks.models

CODE_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What each code means, as this migration wrote them: append only.
OUTPUT_TYPE_CODES = ("stdout", "stderr", "log", "artifact", "commit")


def _rewrite(schema_editor, *, to_codes: bool) -> None:
    mapping = {name: CODE_DIGITS[index] for index, name in enumerate(OUTPUT_TYPE_CODES)}
    if not to_codes:
        mapping = {code: name for name, code in mapping.items()}
    cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in mapping.items())
    schema_editor.execute(
        f"UPDATE tasks_taskoutput SET output_type = CASE output_type {cases} END "
        f"WHERE output_type IN ({', '.join(repr(old) for old in mapping)})"
    )


def to_codes(apps, schema_editor):
    _rewrite(schema_editor, to_codes=True)


def to_names(apps, schema_editor):
    _rewrite(schema_editor, to_codes=False)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0025_history_choices_as_codes_on_postgresql")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_codes, to_names)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskoutput",
                    name="output_type",
                    field=tasks.models.CodedChoiceField(
                        choices=[
                            ("stdout", "stdout"),
                            ("stderr", "stderr"),
                            ("log", "log"),
                            ("artifact", "artifact"),
                            ("commit", "commit"),
                        ],
                        codes=OUTPUT_TYPE_CODES,
                        coded_on=("sqlite", "postgresql"),
                        max_length=16,
                    ),
                ),
            ],
        ),
    ]
