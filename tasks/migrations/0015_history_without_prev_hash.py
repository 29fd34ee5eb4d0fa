"""History rows without ``prev_hash`` (issue 16, storage): a row's previous link is the previous row's ``hash``
(the genesis hash before the first), so storing it again cost 32 bytes a row and proved nothing the HMAC does not:
the chain is checked with the link derived from the rows themselves. The append-only triggers are dropped for the
table's rewrite and re-installed after it. Backwards, each row gets its previous link back from the rows."""

from django.db import migrations

import tasks.models
from tasks import db_triggers
from tasks.audit import GENESIS_HASH

HASH_HELP = "HMAC-SHA256 over the previous row's hash and this row, under key_id."


def _prev_hash(model, *, null: bool) -> tasks.models.DigestField:
    field = tasks.models.DigestField(null=null)
    field.set_attributes_from_name("prev_hash")
    field.model = model
    return field


def drop_prev_hash(apps, schema_editor):
    model = apps.get_model("tasks", "TaskHistory")
    schema_editor.remove_field(model, model._meta.get_field("prev_hash"))


def add_prev_hash_back(apps, schema_editor):
    """The column back, first empty (nullable), filled from the rows, then required as it was."""
    model = apps.get_model("tasks", "TaskHistory")
    schema_editor.add_field(model, _prev_hash(model, null=True))
    schema_editor.execute(
        "UPDATE tasks_taskhistory SET prev_hash = COALESCE((SELECT p.hash FROM tasks_taskhistory p "
        "WHERE p.task_id = tasks_taskhistory.task_id AND p.seq = tasks_taskhistory.seq - 1), %s)",
        [bytes.fromhex(GENESIS_HASH)],
    )
    schema_editor.alter_field(model, _prev_hash(model, null=True), _prev_hash(model, null=False))


def uninstall(apps, schema_editor):
    db_triggers.uninstall(schema_editor.connection)


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0014_history_digests_as_bytes")]

    operations = [
        migrations.RunPython(uninstall, install),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_prev_hash, add_prev_hash_back)],
            state_operations=[migrations.RemoveField(model_name="taskhistory", name="prev_hash")],
        ),
        migrations.AlterField(
            model_name="taskhistory", name="hash", field=tasks.models.DigestField(help_text=HASH_HELP)
        ),
        migrations.RunPython(install, uninstall),
    ]
