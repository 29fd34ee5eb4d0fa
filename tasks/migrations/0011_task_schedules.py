"""Periodic schedules defined by staff (each derives a django-celery-beat PeriodicTask) and the scheduler lease that
lets exactly one beat send."""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
import tasks.models
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("tasks", "0010_task_queue_priority_time_limits"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SchedulerLease",
            fields=[
                ("name", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("holder", models.CharField(max_length=255)),
                ("expires_at", models.DateTimeField()),
                ("acquired_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="TaskSchedule",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.SlugField(
                        help_text="Names the schedule in the tasks' history.", max_length=100, unique=True
                    ),
                ),
                ("title", models.CharField(help_text="Title of each task it submits.", max_length=200)),
                ("handler", models.CharField(help_text="Registered handler that runs each task.", max_length=100)),
                ("payload", models.JSONField(blank=True, default=dict)),
                ("enabled", models.BooleanField(default=True)),
                (
                    "queue",
                    models.CharField(
                        blank=True,
                        help_text="Empty: the handler's queue, else the default queue.",
                        max_length=100,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[A-Za-z0-9._:-]+\\Z", "Use letters, digits, '.', '_', ':' or '-'."
                            )
                        ],
                    ),
                ),
                (
                    "priority",
                    models.PositiveSmallIntegerField(
                        blank=True,
                        help_text="0 (last) to 9 (first); empty: the handler's.",
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(9),
                        ],
                    ),
                ),
                (
                    "max_attempts",
                    models.PositiveSmallIntegerField(
                        blank=True,
                        help_text="Empty: the handler's.",
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(1),
                            django.core.validators.MaxValueValidator(100),
                        ],
                    ),
                ),
                (
                    "soft_time_limit",
                    models.FloatField(
                        blank=True,
                        help_text="Seconds; empty: the handler's.",
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(0.001),
                            django.core.validators.MaxValueValidator(604800.0),
                            tasks.models.finite_number,
                        ],
                    ),
                ),
                (
                    "time_limit",
                    models.FloatField(
                        blank=True,
                        help_text="Seconds; empty: the handler's.",
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(0.001),
                            django.core.validators.MaxValueValidator(604800.0),
                            tasks.models.finite_number,
                        ],
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "crontab",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="django_celery_beat.crontabschedule",
                    ),
                ),
                (
                    "interval",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="django_celery_beat.intervalschedule",
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        help_text="Owner of the tasks it submits.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="task_schedules",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "periodic_task",
                    models.OneToOneField(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="crux_schedule",
                        to="django_celery_beat.periodictask",
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("crontab__isnull", False), ("interval__isnull", True)),
                            models.Q(("crontab__isnull", True), ("interval__isnull", False)),
                            _connector="OR",
                        ),
                        name="taskschedule_one_timing",
                        violation_error_message="Choose an interval or a crontab, not both.",
                    )
                ],
            },
        ),
    ]
