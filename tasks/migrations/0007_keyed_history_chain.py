"""Key the history chain and sign purge grants (issue 13: tampering caught even with raw database access).

Rows written before this migration are chained with unkeyed sha256, which anyone with the database and the
code can recompute. Each task's chain is first verified with that hash, end to end and against the task's
recorded head; an intact chain is then re-signed with the newest audit key (HMAC-SHA256, ``tasks.keys``),
its rows naming that key's id. The append-only triggers are dropped for the rewrite and re-installed after
it, with the DELETE trigger now checking the grant's MAC. A chain that does not verify is NOT re-signed:
its rows keep ``key_id = ''`` and ``verify_audit`` names them, so tampering done before the upgrade is not
laundered into a valid chain.
"""

import logging

from django.db import migrations, models

from tasks import db_triggers
from tasks.audit import HASHED_FIELDS
from tasks.history import resign_legacy_chain

logger = logging.getLogger("crux.audit")
BATCH = 500


def resign_chains(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    TaskHistory = apps.get_model("tasks", "TaskHistory")
    connection = schema_editor.connection
    pk_field = Task._meta.pk
    head_field = Task._meta.get_field("history_head")  # text until migration 0017 stored it as bytes
    digest = TaskHistory._meta.get_field("hash")  # its values as the model of the running state stores them
    # The columns of the running state: prev_hash until migration 0015 derived it.
    links = ["prev_hash", "hash"] if any(f.name == "prev_hash" for f in TaskHistory._meta.fields) else ["hash"]

    def link(value):
        return digest.get_db_prep_value(value, connection)

    fields = [name for name in HASHED_FIELDS if name != "key_id"]
    tasks = list(Task.objects.using(connection.alias).order_by("pk").values("id", "history_count", "history_head"))
    broken = []
    for start in range(0, len(tasks), BATCH):
        batch = tasks[start : start + BATCH]
        by_task = {}
        rows = TaskHistory.objects.using(connection.alias).filter(task_id__in=[t["id"] for t in batch])
        for row in rows.order_by("task_id", "seq").values("id", *fields, *links):
            by_task.setdefault(row["task_id"], []).append(row)
        history_updates, head_updates = [], []
        for task in batch:
            signed = resign_legacy_chain(by_task.get(task["id"], []), (task["history_count"], task["history_head"]))
            if signed is None:
                broken.append(str(task["id"]))
                continue
            history_updates.extend((*(link(row[name]) for name in links), row["key_id"], row["id"]) for row in signed)
            head_updates.append(
                (
                    head_field.get_db_prep_value(signed[-1]["hash"], connection),
                    pk_field.get_db_prep_value(task["id"], connection),
                )
            )
        with connection.cursor() as cursor:
            assignments = ", ".join(f"{name} = %s" for name in links)
            cursor.executemany(
                f"UPDATE tasks_taskhistory SET {assignments}, key_id = %s WHERE id = %s", history_updates
            )
            cursor.executemany("UPDATE tasks_task SET history_head = %s WHERE id = %s", head_updates)
    if broken:
        logger.warning(
            "%s task chain(s) did not verify before keying and were left unkeyed (verify_audit names them): %s",
            len(broken),
            ", ".join(broken[:20]) + (" ..." if len(broken) > 20 else ""),
        )


def uninstall(apps, schema_editor):
    db_triggers.uninstall(schema_editor.connection)


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0006_search_index")]

    operations = [
        migrations.RunPython(uninstall, install),
        migrations.AddField(
            model_name="taskhistory",
            name="key_id",
            field=models.CharField(
                blank=True, help_text="The audit key that signed this row ('' = unkeyed).", max_length=32
            ),
        ),
        migrations.AlterField(
            model_name="taskhistory",
            name="hash",
            field=models.CharField(help_text="HMAC-SHA256 over prev_hash and the row, under key_id.", max_length=64),
        ),
        migrations.AddField(
            model_name="historypurgegrant",
            name="nonce",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="historypurgegrant",
            name="mac",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(resign_chains, migrations.RunPython.noop),
        migrations.RunPython(install, uninstall),
    ]
