"""Install the database triggers that make task history append-only (tasks/db_triggers.py)."""

from django.db import migrations

from tasks import db_triggers


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    db_triggers.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
