"""An output's content compressed where that pays (``tasks.models.CompressedTextField``).

SQLite: the column stays ``text`` (SQLite keeps a BLOB in it as a BLOB). PostgreSQL: the column becomes ``bytea``,
each text its UTF-8. Forwards, the outputs already stored are compressed by the field's rule as it stands here;
backwards, every compressed one is text again (and PostgreSQL's column ``text``), which the code before this
migration reads.
"""

import zlib

from django.db import migrations

import tasks.models

# CompressedTextField's rule when this migration was written: frozen here, as a migration is.
MIN_BYTES = 256
MAX_RATIO = 0.875
LEVEL = 6
TAG = b"\x00"
BATCH = 2000


def _rewrite(schema_editor, condition, convert):
    """Each output whose stored content meets ``condition`` (SQL) and that ``convert`` changes (None: it does not),
    rewritten, in batches."""
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
            changed = [(stored, key) for key, content in rows if (stored := convert(content)) is not None]
            cursor.executemany("UPDATE tasks_taskoutput SET content = %s WHERE id = %s", changed)


def _compressed(content):
    text = content.encode() if isinstance(content, str) else bytes(content)
    stream = zlib.compress(text, LEVEL)
    return TAG + stream if len(stream) <= len(text) * MAX_RATIO else None


def _text(stored):
    return zlib.decompress(bytes(stored)[len(TAG) :]).decode()


def compress(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        _rewrite(
            schema_editor, f"typeof(content) = 'text' AND length(CAST(content AS BLOB)) >= {MIN_BYTES}", _compressed
        )
    elif schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_taskoutput ALTER COLUMN content TYPE bytea USING convert_to(content, 'UTF8')"
        )
        _rewrite(schema_editor, f"octet_length(content) >= {MIN_BYTES}", _compressed)


def decompress(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        _rewrite(schema_editor, "typeof(content) = 'blob'", _text)
    elif schema_editor.connection.vendor == "postgresql":
        _rewrite(
            schema_editor, "substring(content FROM 1 FOR 1) = '\\x00'::bytea", lambda stored: _text(stored).encode()
        )
        schema_editor.execute(
            "ALTER TABLE tasks_taskoutput ALTER COLUMN content TYPE text USING convert_from(content, 'UTF8')"
        )


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
