"""Periodic schedules in the admin: staff choose a timing (an interval or a crontab), a registered handler, its
payload and the task options; each firing submits a normal Crux task owned by the schedule's owner.

Every save and delete goes through ``tasks.services`` (which derives beat's ``PeriodicTask``); a payload the
handler's declaration refuses is refused here, with field messages, when the schedule is saved. django-celery-beat's
own ``PeriodicTask`` admin is read-only: editing it would let staff point beat at any Celery task, bypass the
payload checks, or change Crux's housekeeping entries. Its solar and clocked timings are hidden (Crux schedules use
intervals and crontabs); intervals and crontabs keep their admin, which the schedule form's "+" buttons open.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django_celery_beat.models import ClockedSchedule, PeriodicTask, SolarSchedule

from tasks import services
from tasks.admin.base import ReadOnlyAdmin, short_datetime
from tasks.admin.forms import HandlerField, PayloadField, PayloadFormMixin
from tasks.exceptions import InvalidTaskData
from tasks.models import TaskSchedule
from tasks.services.schedules import OPTION_FIELDS


class TaskScheduleForm(PayloadFormMixin, forms.ModelForm):
    handler = HandlerField(help_text="Registered handler that runs each task.")
    payload = PayloadField()

    class Meta:
        model = TaskSchedule
        fields = (
            "name",
            "title",
            "handler",
            "payload",
            "interval",
            "crontab",
            "enabled",
            "queue",
            "priority",
            "max_attempts",
            "soft_time_limit",
            "time_limit",
        )

    def _post_clean(self) -> None:
        """After Django's own checks of the instance: the service's, which a firing's submission would make."""
        super()._post_clean()  # type: ignore[misc]
        if self.errors:
            return
        try:
            services.validate_schedule(self.instance)
        except InvalidTaskData as exc:
            self.add_service_errors(exc)


@admin.register(TaskSchedule)
class TaskScheduleAdmin(admin.ModelAdmin):
    form = TaskScheduleForm
    list_display = ("name", "title", "handler", "timing", "enabled", "owner", "last_run", "runs")
    list_filter = ("enabled", "handler")
    search_fields = ("name", "title")
    list_select_related = ("owner", "interval", "crontab", "periodic_task")
    readonly_fields = ("owner", "last_run", "runs", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "title", "handler", "payload", "enabled", "owner")}),
        ("Timing: an interval or a crontab", {"fields": ("interval", "crontab", "last_run", "runs")}),
        ("Task options (empty: the handler's)", {"fields": OPTION_FIELDS}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="timing")
    def timing(self, obj: TaskSchedule) -> str:
        return str(obj.interval or obj.crontab)

    @admin.display(description="last run")
    def last_run(self, obj: TaskSchedule) -> str:
        return short_datetime(obj.periodic_task.last_run_at if obj.periodic_task else None)

    @admin.display(description="runs")
    def runs(self, obj: TaskSchedule) -> int:
        return obj.periodic_task.total_run_count if obj.periodic_task else 0

    def save_model(self, request: HttpRequest, obj: TaskSchedule, form: Any, change: bool) -> None:
        if not change:
            obj.owner = request.user  # type: ignore[assignment]
        services.save_schedule(obj)

    def delete_model(self, request: HttpRequest, obj: TaskSchedule) -> None:
        services.delete_schedule(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TaskSchedule]) -> None:
        with transaction.atomic():
            for schedule in queryset.select_related("periodic_task"):
                services.delete_schedule(schedule)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django deletes on any POST; here only the confirmation page's own (``post=yes``) deletes."""
        if request.method == "POST" and request.POST.get("post") != "yes":
            request.POST = QueryDict()
        return super().delete_view(request, object_id, extra_context)


for _hidden in (PeriodicTask, SolarSchedule, ClockedSchedule):
    if admin.site.is_registered(_hidden):
        admin.site.unregister(_hidden)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(ReadOnlyAdmin):
    """Beat's entries as beat sees them: Crux's housekeeping and one per schedule (derived, never edited here)."""

    list_display = ("name", "task", "scheduler", "enabled", "last_run_at", "total_run_count")
    list_filter = ("enabled", "task")
    search_fields = ("name", "task")
    fields = ("name", "task", "kwargs", "interval", "crontab", "enabled", "last_run_at", "total_run_count")
