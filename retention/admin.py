"""Admin for retention: editable policies, a read-only ledger (each purged task restorable from its archive) and
deletion log, the breaker with its acknowledgement button."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from retention.archive import ArchiveError
from retention.breaker import acknowledge, breaker
from retention.models import DeletionBreaker, DeletionEvent, PurgeLedger, RetentionPolicy
from retention.services import policies, purge, unarchive_task
from tasks.admin import ReadOnlyAdmin
from tasks.admin.actions import ConfirmActionForm
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
    list_display = (
        "task_id", "title", "state", "owner_username", "purged_at", "policy", "actor", "restored_at", "restore_link",
    )  # fmt: skip
    list_filter = ("policy", "state")
    search_fields = ("=task_id", "title")
    date_hierarchy = "purged_at"
    show_full_result_count = False

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/restore/",
                self.admin_site.admin_view(self.restore_view),
                name="retention_purgeledger_restore",
            ),
            *super().get_urls(),
        ]

    def has_restore_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return user.is_active and user.is_staff and user.has_perm("retention.restore_purgeledger")

    @admin.display(description="restore")
    def restore_link(self, entry: PurgeLedger) -> str:
        if entry.restored_at is not None:
            return "restored"
        url = reverse("admin:retention_purgeledger_restore", args=[entry.pk])
        return format_html('<a href="{}">Restore from archive…</a>', url)

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)
        return shown if self.has_restore_permission(request) else [n for n in shown if n != "restore_link"]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        if self.has_restore_permission(request) and str(object_id).isdigit():
            extra["restore_url"] = reverse("admin:retention_purgeledger_restore", args=[object_id])
        return super().change_view(request, object_id, form_url, extra)

    def restore_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Staff with ``retention.restore_purgeledger`` (superusers): a confirmation page with a reason, then the
        restore the ``restore --task`` command does; the task's history row names the user and ``admin``."""
        if not self.has_restore_permission(request):
            raise PermissionDenied
        entry = get_object_or_404(PurgeLedger, pk=pk)
        form = ConfirmActionForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and request.POST.get("confirm") == "yes" and form.is_valid():
            try:
                result = unarchive_task(
                    entry.task_id,
                    actor=signed_in(request.user),
                    channel=Channel.ADMIN,
                    note=form.cleaned_data["reason"],
                )
            except (TaskError, ArchiveError) as exc:
                self.message_user(request, f"Restore refused, nothing changed: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, f"Task {result.task_id} {result.outcome} from {entry.archive_file}.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:tasks_task_change", args=[result.task_id]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Restore a purged task from its archive",
            "entry": entry,
            "form": form,
        }
        return TemplateResponse(request, "admin/retention/purgeledger/restore.html", context)


@admin.register(DeletionEvent)
class DeletionEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "task_count", "task_id", "actor", "channel")
    list_filter = ("kind", "channel")
    date_hierarchy = "at"
    show_full_result_count = False


@admin.register(DeletionBreaker)
class DeletionBreakerAdmin(ReadOnlyAdmin):
    """The breaker's page (the banner's link target): its state, and a button that acknowledges a spike."""

    list_display = ("__str__", "tripped_at", "tripped_reason", "acknowledged_at", "acknowledged_by")
    actions = None

    def get_urls(self) -> list:
        return [
            path(
                "acknowledge/",
                self.admin_site.admin_view(require_POST(self.acknowledge_view)),
                name="retention_deletionbreaker_acknowledge",
            ),
            *super().get_urls(),
        ]

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return (
            request.user.is_active
            and request.user.is_staff
            and request.user.has_perm("retention.acknowledge_deletionbreaker")
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        state = breaker()
        extra = {
            **(extra_context or {}),
            "title": "Deletion breaker",
            "breaker_state": state,
            "can_acknowledge": state.is_tripped and self.has_acknowledge_permission(request),
        }
        return super().changelist_view(request, extra)

    def acknowledge_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_acknowledge_permission(request):
            raise PermissionDenied
        if acknowledge(signed_in(request.user).get_username()):
            self.message_user(request, "Deletion spike acknowledged: deletions are allowed again.", messages.SUCCESS)
        else:
            self.message_user(request, "The breaker was not tripped.", messages.INFO)
        return HttpResponseRedirect(reverse("admin:retention_deletionbreaker_changelist"))
