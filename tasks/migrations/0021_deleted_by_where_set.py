"""The index of who deleted a task holds only the tasks someone deleted (issue 16, storage).

Django indexes every foreign key; most tasks are never deleted, so the index held one entry per task for nothing but
the rare trash filter and the PROTECT check of a user's deletion (``deleted_by = ?``, which a partial index ``WHERE
deleted_by IS NOT NULL`` serves on both engines). The index is dropped and created by name: the field's own
AlterField would remake the task table on SQLite (new rowids, which the search index is keyed by).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FOREIGN_KEY_INDEX = "tasks_task_deleted_by_id_17a1ba3e"  # the name Django gave it (both engines)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0020_times_as_integers"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {FOREIGN_KEY_INDEX}",
                    reverse_sql=f"CREATE INDEX {FOREIGN_KEY_INDEX} ON tasks_task (deleted_by_id)",
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="deleted_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("deleted_by__isnull", False)), fields=["deleted_by"], name="task_deleted_by"
            ),
        ),
    ]
