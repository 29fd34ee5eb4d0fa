"""Backup drills in the admin: every drill read-only, and a button that queues one now (staff holding
``persistence.run_backupdrill``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from persistence.backup import backups
from persistence.models import BackupDrill
from persistence.tasks import drill_backup
from tasks.admin import ReadOnlyAdmin


@admin.register(BackupDrill)
class BackupDrillAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "backup_name", "ok", "duration_seconds", "trigger", "actor")
    list_filter = ("ok", "trigger")
    search_fields = ("backup_name",)
    date_hierarchy = "started_at"
    change_list_template = "admin/persistence/backupdrill/change_list.html"

    def get_urls(self) -> list:
        return [
            path("run/", self.admin_site.admin_view(require_POST(self.run_view)), name="persistence_backupdrill_run"),
            *super().get_urls(),
        ]

    def has_run_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return user.is_active and user.is_staff and user.has_perm("persistence.run_backupdrill")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra = {**(extra_context or {}), "may_run_drill": self.has_run_permission(request)}
        return super().changelist_view(request, extra)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """Queue a drill of the newest backup on the housekeeping queue (a drill of a million tasks takes minutes,
        longer than a web request may); it is recorded below, naming the user, once the housekeeping worker ran it."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        found = backups()
        if not found:
            self.message_user(request, "No drill queued: there is no backup to drill yet.", messages.ERROR)
        else:
            try:
                drill_backup.apply_async(args=(request.user.get_username(),))
            except Exception as exc:  # the broker is unreachable: say so, nothing was queued
                self.message_user(request, f"No drill queued: the broker refused it ({exc}).", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Drill of {found[-1].name} queued: it appears in this list when the housekeeping worker has run "
                    "it (a large backup takes minutes).",
                    messages.SUCCESS,
                )
        return HttpResponseRedirect(reverse("admin:persistence_backupdrill_changelist"))
