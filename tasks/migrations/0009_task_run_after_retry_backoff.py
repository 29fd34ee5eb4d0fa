"""Durable waits: a task's start time (``run_at``, a retry's backoff) and its per-task retry backoff, with the
partial index of queued tasks waiting for their time and not yet published (crux.dispatch_due).

Adding columns may remake tasks_task on SQLite, which drops the search index's triggers: they are installed
again and the index rebuilt (tasks/db_triggers.py, install_search)."""

import django.core.validators
from django.db import migrations, models

import tasks.models
from tasks import db_triggers


def reinstall_search(apps, schema_editor):
    db_triggers.install_search(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0008_task_dispatch_epoch"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="retry_backoff",
            field=models.FloatField(
                blank=True,
                help_text="Seconds before the first retry, doubling per attempt (empty: the handler's default).",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(86400.0),
                    tasks.models.finite_number,
                ],
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="run_after",
            field=models.DateTimeField(blank=True, help_text="Not started before this time.", null=True),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("dispatched_at__isnull", True), ("state", "queued")),
                fields=["run_after"],
                name="task_queued_due",
            ),
        ),
        migrations.RunPython(reinstall_search, migrations.RunPython.noop),
    ]
