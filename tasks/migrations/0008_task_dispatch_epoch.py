"""The broker epoch that confirmed a queued task's publish (persistence.dispatch: re-publish only what is lost).

Adding a NOT NULL column remakes tasks_task on SQLite, which drops the search index's triggers: they are
installed again and the index rebuilt (tasks/db_triggers.py, install_search)."""

from django.db import migrations, models

from tasks import db_triggers


def reinstall_search(apps, schema_editor):
    db_triggers.install_search(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0007_keyed_history_chain"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="dispatch_epoch",
            field=models.CharField(blank=True, editable=False, max_length=32),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("state", "queued")), fields=["dispatch_epoch"], name="task_queued_epoch"
            ),
        ),
        migrations.RunPython(reinstall_search, migrations.RunPython.noop),
    ]
