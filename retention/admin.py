"""Admin for retention: editable policies, a read-only ledger and deletion log, the breaker with its acknowledgement."""

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from retention.models import DeletionBreaker, DeletionEvent, PurgeLedger, RetentionPolicy
from retention.monitor import acknowledge
from retention.services import policies


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)


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
