"""Admin for staff: every edit goes through tasks.services with a stated reason; no delete."""

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from tasks import services
from tasks.audit import Channel
from tasks.models import (
    CLISession,
    CLISessionCommand,
    Task,
    TaskHistory,
    TaskMetrics,
    TaskOutput,
    UserPreference,
)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HistoryInline(ReadOnlyInline):
    model = TaskHistory
    fields = ("seq", "created_at", "event", "state_from", "state_to", "actor", "channel", "reason")
    readonly_fields = fields
    ordering = ("-seq",)


class OutputInline(ReadOnlyInline):
    model = TaskOutput
    fields = ("created_at", "output_type", "content", "file_path", "commit_hash")
    readonly_fields = fields


class MetricsInline(ReadOnlyInline):
    model = TaskMetrics
    fields = (
        "processing_time_seconds",
        "iterations",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "stop_reason",
        "converged",
    )
    readonly_fields = fields


class TaskAdminForm(forms.ModelForm):
    change_reason = forms.CharField(
        max_length=500, help_text="Why you are making this change; recorded in the task's history."
    )

    class Meta:
        model = Task
        fields = sorted(services.EDITABLE_FIELDS)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskAdminForm
    list_display = (
        "short_id",
        "title",
        "state",
        "role",
        "provider",
        "owner",
        "created_at",
        "attempt_count",
        "deleted_at",
    )
    list_filter = ("state", "role", "provider")
    search_fields = ("=id", "title")
    readonly_fields = (
        "id",
        "state",
        "owner",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "progress",
        "current_phase",
        "attempt_count",
        "last_error",
        "error_count",
        "deleted_at",
        "deleted_by",
        "delete_reason",
        "history_count",
    )
    inlines = [MetricsInline, OutputInline, HistoryInline]
    list_select_related = ("owner",)
    show_full_result_count = False

    @admin.display(description="id")
    def short_id(self, obj: Task) -> str:
        return str(obj.pk)[:8]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Task, form: forms.ModelForm, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in services.EDITABLE_FIELDS}
        reason = form.cleaned_data["change_reason"]
        if change:
            saved = services.update_task(obj.pk, actor=request.user, channel=Channel.ADMIN, reason=reason, **fields)
        else:
            saved = services.create_task(
                owner=request.user, actor=request.user, channel=Channel.ADMIN, reason=reason, **fields
            )
        obj.pk = saved.pk
        obj.refresh_from_db()


@admin.register(TaskHistory)
class TaskHistoryAdmin(admin.ModelAdmin):
    list_display = ("task", "seq", "created_at", "event", "state_from", "state_to", "actor", "channel")
    list_filter = ("event", "channel")
    search_fields = ("=task__id", "actor", "reason")
    list_select_related = ("task",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CommandInline(ReadOnlyInline):
    model = CLISessionCommand
    fields = ("started_at", "command", "exit_code", "finished_at")
    readonly_fields = fields


@admin.register(CLISession)
class CLISessionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "provider", "started_at", "ended_at")
    inlines = [CommandInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UserPreference)
class UserPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "default_provider", "default_model", "default_role", "updated_at")
