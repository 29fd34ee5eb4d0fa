"""Backup drills in the admin: every drill read-only, and a button that runs one now (staff holding
``persistence.run_backupdrill``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from persistence.drills import DrillError, run_drill
from persistence.models import BackupDrill, DrillTrigger
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
        """Drill the newest backup now, in this request (the drill's child process does the work), and say how it
        went; the drill is recorded like any other, naming the user."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        try:
            drill = run_drill(trigger=DrillTrigger.ADMIN, actor=request.user.get_username())
        except DrillError as exc:
            self.message_user(request, f"No drill run: {exc}", messages.ERROR)
        else:
            if drill.ok:
                self.message_user(
                    request, f"Drill of {drill.backup_name} passed in {drill.duration_seconds:.1f}s.", messages.SUCCESS
                )
            else:
                self.message_user(
                    request, f"Drill of {drill.backup_name} FAILED: {'; '.join(drill.problems[:3])}", messages.ERROR
                )
        return HttpResponseRedirect(reverse("admin:persistence_backupdrill_changelist"))
