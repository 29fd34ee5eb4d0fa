"""CLI sessions (read-only) and user preferences in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.text import Truncator

from tasks.admin.base import (
    ReadOnlyAdmin,
    ReadOnlyInline,
)
from tasks.admin.lists import CappedCountPaginator
from tasks.models import (
    CLISession,
    CLISessionCommand,
    UserPreference,
)


class CommandInline(ReadOnlyInline):
    model = CLISessionCommand
    fields = ("started_at", "command", "exit_code", "finished_at", "task")
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("tasks.view_clisession") or request.user.has_perm("tasks.view_clisessioncommand")


@admin.register(CLISession)
class CLISessionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "user", "provider", "model", "working_dir", "started_at", "last_activity_at", "ended_at")
    list_filter = ("provider", "started_at")
    search_fields = ("name", "working_dir", "user__username")
    date_hierarchy = "started_at"
    list_select_related = ("user",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    inlines = [CommandInline]


@admin.register(CLISessionCommand)
class CLISessionCommandAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "session", "short_command", "exit_code", "finished_at", "task")
    list_filter = ("exit_code", "started_at")
    search_fields = ("command",)
    list_select_related = ("session", "task")
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="command")
    def short_command(self, obj: CLISessionCommand) -> str:
        return Truncator(obj.command).chars(80)


@admin.register(UserPreference)
class UserPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "default_provider", "default_model", "default_role", "updated_at")
    search_fields = ("user__username", "default_provider", "default_model", "default_role")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
