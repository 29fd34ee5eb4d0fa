"""History digests as bytes (issue 16, storage): each history row's ``prev_hash`` and ``hash`` become their 32
bytes instead of 64 hex characters. No value a link covers changes, nor any value the code sees (``DigestField``
reads and writes hex text), so every chain verifies as before. The append-only triggers are dropped for the
rewrite and re-installed after it.

PostgreSQL converts in place (``ALTER COLUMN … TYPE bytea USING decode(…, 'hex')``: Django's own AlterField would
cast the hex text's characters). SQLite rebuilds the table with BLOB columns (rows, ids, indexes as they were),
then decodes the copied text with a function of this connection.
"""

from django.db import migrations, models

import tasks.models
from tasks import db_triggers

HASH_HELP = "HMAC-SHA256 over prev_hash and the row, under key_id."
COLUMNS = ("prev_hash", "hash")


def _fields(digest: bool) -> dict[str, models.Field]:
    """The two columns' fields, as digests (after) or as the hex text they were (before), named."""
    fields = {}
    for name in COLUMNS:
        help_text = HASH_HELP if name == "hash" else ""
        field = tasks.models.DigestField(help_text=help_text) if digest else models.CharField(max_length=64)
        field.set_attributes_from_name(name)
        fields[name] = field
    return fields


def _rebuild(apps, schema_editor, digest: bool) -> None:
    """SQLite: the table rebuilt with the columns as digests (or back as text); the values are copied as they are."""
    model = apps.get_model("tasks", "TaskHistory")
    before, after = _fields(not digest), _fields(digest)
    for name in COLUMNS:
        before[name].model = after[name].model = model
        schema_editor.alter_field(model, before[name], after[name])


def _convert_sqlite(schema_editor, function: str, convert) -> None:
    connection = schema_editor.connection
    connection.ensure_connection()
    connection.connection.create_function(function, 1, convert, deterministic=True)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE tasks_taskhistory SET prev_hash = {function}(prev_hash), hash = {function}(hash)")


def _unhex(value):
    return bytes.fromhex(value) if isinstance(value, str) else value


def _hex(value):
    return bytes(value).hex() if isinstance(value, (bytes, memoryview)) else value


def to_bytes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_taskhistory "
            "ALTER COLUMN prev_hash TYPE bytea USING decode(prev_hash, 'hex'), "
            "ALTER COLUMN hash TYPE bytea USING decode(hash, 'hex')"
        )
        return
    _rebuild(apps, schema_editor, digest=True)
    _convert_sqlite(schema_editor, "crux_unhex", _unhex)


def to_hex(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE tasks_taskhistory "
            "ALTER COLUMN prev_hash TYPE varchar(64) USING encode(prev_hash, 'hex'), "
            "ALTER COLUMN hash TYPE varchar(64) USING encode(hash, 'hex')"
        )
        return
    _convert_sqlite(schema_editor, "crux_hex", _hex)
    _rebuild(apps, schema_editor, digest=False)


def uninstall(apps, schema_editor):
    db_triggers.uninstall(schema_editor.connection)


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0013_celery_result_upsert")]

    operations = [
        migrations.RunPython(uninstall, install),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(to_bytes, to_hex)],
            state_operations=[
                migrations.AlterField(
                    model_name="taskhistory", name="hash", field=tasks.models.DigestField(help_text=HASH_HELP)
                ),
                migrations.AlterField(model_name="taskhistory", name="prev_hash", field=tasks.models.DigestField()),
            ],
        ),
        migrations.RunPython(install, uninstall),
    ]
