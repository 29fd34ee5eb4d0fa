"""A task's Celery id is derived from its id and publish count (``Task.celery_task_id``): its column goes. Undone,
the column is filled back with the derived ids, which the code before read from it."""

from django.db import migrations


def fill_celery_ids(apps, schema_editor):
    task_model = apps.get_model("tasks", "Task")
    published = task_model.objects.using(schema_editor.connection.alias).filter(dispatch_count__gt=0)
    batch = []
    for task in published.only("id", "dispatch_count").iterator(chunk_size=2000):
        task.celery_task_id = f"{task.pk}.{task.dispatch_count}"
        batch.append(task)
        if len(batch) == 2000:
            task_model.objects.bulk_update(batch, ["celery_task_id"])
            batch = []
    task_model.objects.bulk_update(batch, ["celery_task_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0030_history_recovery_index"),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, fill_celery_ids),
        migrations.RemoveField(
            model_name="task",
            name="celery_task_id",
        ),
    ]
