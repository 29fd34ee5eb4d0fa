"""Admin for retention: editable policies, a read-only ledger and deletion log, the breaker with its acknowledgement."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from retention.archive import ArchiveError
from retention.breaker import acknowledge
from retention.models import DeletionBreaker, DeletionEvent, PurgeLedger, RetentionPolicy
from retention.services import policies, purge
from tasks.admin import ReadOnlyAdmin
from tasks.audit import Channel, signed_in
from tasks.exceptions import TaskError


class PurgeForm(forms.Form):
    confirm = forms.BooleanField(
        label="I have read the list: archive these tasks and remove them",
        help_text="They stay restorable from their archive (manage.py restore --task ID).",
    )


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    list_display = ("scope", "keep_days", "name", "updated_at", "updated_by")
    fields = ("scope", "keep_days")
    readonly_fields = ("scope",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        policies()  # every scope is listed, with its environment default until edited
        return super().changelist_view(request, extra_context)

    def save_model(self, request: HttpRequest, obj: RetentionPolicy, form: Any, change: bool) -> None:
        obj.updated_by = signed_in(request.user)
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list:
        return [
            path("purge/", self.admin_site.admin_view(self.purge_view), name="retention_purge"),
            *super().get_urls(),
        ]

    def purge_view(self, request: HttpRequest) -> HttpResponse:
        """Superusers only: the dry-run list of what the policies let go, then the purge once confirmed."""
        if not request.user.is_superuser:
            raise PermissionDenied
        form = PurgeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                report = purge(actor=signed_in(request.user), channel=Channel.ADMIN, confirm=True)
            except (TaskError, ArchiveError) as exc:
                self.message_user(request, f"Purge refused, nothing deleted: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Purged {report.purged} task(s); archive {report.archive_file or '-'} "
                    f"({report.archive_checksum or 'none'}). See the purge ledger.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:retention_purgeledger_changelist"))
        report = purge(actor=signed_in(request.user), channel=Channel.ADMIN, confirm=False)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Purge by retention policy",
            "report": report,
            "form": form,
        }
        return TemplateResponse(request, "admin/retention/retentionpolicy/purge.html", context)


@admin.register(PurgeLedger)
class PurgeLedgerAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "title", "state", "owner_username", "purged_at", "policy", "actor", "restored_at")
    list_filter = ("policy", "state")
    search_fields = ("=task_id", "title")
    date_hierarchy = "purged_at"
    show_full_result_count = False


@admin.register(DeletionEvent)
class DeletionEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "task_count", "task_id", "actor", "channel")
    list_filter = ("kind", "channel")
    date_hierarchy = "at"
    show_full_result_count = False


@admin.register(DeletionBreaker)
class DeletionBreakerAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "tripped_at", "tripped_reason", "acknowledged_at", "acknowledged_by")
    actions = ["acknowledge_spike"]

    @admin.action(description="Acknowledge the deletion spike (allow deletions again)", permissions=["acknowledge"])
    def acknowledge_spike(self, request: HttpRequest, queryset: Any) -> None:
        if acknowledge(request.user.get_username()):
            self.message_user(request, "Deletion spike acknowledged: deletions are allowed again.", messages.SUCCESS)
        else:
            self.message_user(request, "The breaker was not tripped.", messages.INFO)

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("retention.acknowledge_deletionbreaker")
