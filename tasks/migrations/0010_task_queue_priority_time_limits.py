"""Where and how long a task runs: its queue and priority, and the soft and hard time limits of its attempts; two
history channels, for periodic schedules and for Celery's own control commands.

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
        ("tasks", "0009_task_run_after_retry_backoff"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="priority",
            field=models.PositiveSmallIntegerField(
                default=5,
                help_text="0 (last) to 9 (first) within its queue.",
                validators=[django.core.validators.MinValueValidator(0), django.core.validators.MaxValueValidator(9)],
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="queue",
            field=models.CharField(
                blank=True,
                help_text="Celery queue it is published to (empty: the default queue).",
                max_length=100,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9._:-]+\\Z", "Use letters, digits, '.', '_', ':' or '-'."
                    )
                ],
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="soft_time_limit",
            field=models.FloatField(
                blank=True,
                help_text="Seconds after which the handler is told to wrap up (SoftTimeLimitExceeded).",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0.001),
                    django.core.validators.MaxValueValidator(604800.0),
                    tasks.models.finite_number,
                ],
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="time_limit",
            field=models.FloatField(
                blank=True,
                help_text="Seconds after which the attempt is terminated and recorded as failed (then retried or failed).",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0.001),
                    django.core.validators.MaxValueValidator(604800.0),
                    tasks.models.finite_number,
                ],
            ),
        ),
        migrations.AlterField(
            model_name="taskhistory",
            name="channel",
            field=models.CharField(
                choices=[
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
                max_length=16,
            ),
        ),
        migrations.RunPython(reinstall_search, migrations.RunPython.noop),
    ]
