"""An output's content compressed on SQLite where that pays (``tasks.models.CompressedTextField``).

The column stays ``text``: SQLite keeps a BLOB in it as a BLOB. Forwards, the outputs already stored are
compressed by the field's rule as it stands here; backwards, every compressed one is text again, which the code
before this migration reads. PostgreSQL: nothing to do.
"""

import zlib

from django.db import migrations

import tasks.models

# CompressedTextField's rule when this migration was written: frozen here, as a migration is.
MIN_BYTES = 256
MAX_RATIO = 0.875
LEVEL = 6
BATCH = 2000


def _rewrite(schema_editor, condition, convert):
    """Each output whose stored content meets ``condition`` (SQL), rewritten as ``convert`` gives it, in batches."""
    if schema_editor.connection.vendor != "sqlite":
        return
    last = 0
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(
                f"SELECT id, content FROM tasks_taskoutput WHERE id > %s AND {condition} ORDER BY id LIMIT %s",
                [last, BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            changed = [(stored, key) for key, content in rows if (stored := convert(content)) is not content]
            cursor.executemany("UPDATE tasks_taskoutput SET content = %s WHERE id = %s", changed)


def _compressed(content):
    text = content.encode()
    stream = zlib.compress(text, LEVEL)
    return stream if len(stream) <= len(text) * MAX_RATIO else content


def compress(apps, schema_editor):
    _rewrite(
        schema_editor,
        f"typeof(content) = 'text' AND length(CAST(content AS BLOB)) >= {MIN_BYTES}",
        _compressed,
    )


def decompress(apps, schema_editor):
    _rewrite(schema_editor, "typeof(content) = 'blob'", lambda stream: zlib.decompress(stream).decode())


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0027_system_actors_as_codes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(compress, decompress)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskoutput",
                    name="content",
                    field=tasks.models.CompressedTextField(blank=True),
                ),
            ],
        ),
    ]
