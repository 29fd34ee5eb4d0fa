"""The text search index (tasks/db_triggers.py, install_search: pg_trgm GIN indexes on
PostgreSQL, an FTS5 trigram table kept by triggers on SQLite; raw SQL, so the models declare nothing of
it) and an (owner, provider, role, created) index for an owner's filtered lists."""

from django.conf import settings
from django.db import migrations, models

from tasks import db_triggers


def install(apps, schema_editor):
    db_triggers.install_search(schema_editor.connection)


def uninstall(apps, schema_editor):
    db_triggers.uninstall_search(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0005_provider_role_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                fields=["owner", "provider", "role", "-created_at"], name="task_owner_prov_role_created"
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
