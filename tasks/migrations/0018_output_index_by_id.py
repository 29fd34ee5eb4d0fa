"""A task's outputs read in the order they were written by their ids, which grow as they are inserted (issue 16,
storage): the index on (task, created_at) gives way to one on (task, id), which holds no time (on SQLite the id is
the row's key, 54 bytes a completed task less)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tasks', '0017_metrics_in_task_row'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='taskoutput',
            options={'ordering': ['task', 'id']},
        ),
        migrations.RemoveIndex(
            model_name='taskoutput',
            name='output_task_created',
        ),
        migrations.AddIndex(
            model_name='taskoutput',
            index=models.Index(fields=['task', 'id'], name='output_task_order'),
        ),
    ]
