"""History indexes that earn their size (issue 16, storage).

- No index on the history's time (138 bytes a completed task on SQLite, 92 on PostgreSQL). History ids grow with
  time, so the reads by time (the dashboard's and the stats' figures, the admin's "written" filter) start from the
  first id of their moment (``tasks.selectors.history_since``).
- The acting user's index only where a user acted (one row in four: workers and the system act with none).

Both are changed by name, the table left as it is: an AlterField would rebuild it on SQLite, and the append-only
triggers with it.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

TIME_INDEX = "tasks_taskhistory_created_at_fafe4940"
USER_INDEX = "tasks_taskhistory_actor_user_id_4abbde46"


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0015_history_without_prev_hash"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {TIME_INDEX}",
                    f"CREATE INDEX {TIME_INDEX} ON tasks_taskhistory (created_at)",
                ),
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {USER_INDEX}",
                    f"CREATE INDEX {USER_INDEX} ON tasks_taskhistory (actor_user_id)",
                ),
            ],
            state_operations=[
                migrations.AlterField(model_name="taskhistory", name="created_at", field=models.DateTimeField()),
                migrations.AlterField(
                    model_name="taskhistory",
                    name="actor_user",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(
                condition=models.Q(("actor_user__isnull", False)), fields=["actor_user"], name="history_actor_user"
            ),
        ),
    ]
