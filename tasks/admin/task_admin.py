"""The task admin: inspect tasks, act on them through confirmation pages, read their history and timeline.

Guarantees:
- No silent delete: Django's delete action and delete view are gone for tasks.
  Soft delete, restore, requeue and cancel each go through a confirmation page
  that lists exactly the tasks affected and asks for a reason, need their own
  permission (403 otherwise, even for a forced URL) and call ``tasks.services``
  with the staff user as actor and ``admin`` as channel, which writes history.
- Every edit goes through ``tasks.services`` with a stated reason.
- Lists stay fast on a million tasks: no full counts (``CappedCountPaginator``),
  filters on indexed columns, cached filter values, a date drill-down without
  DISTINCT scans, ``list_select_related``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import ShowFacets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from tasks import services
from tasks.admin.actions import ACTIONS
from tasks.admin.base import (
    search_terms,
    short_datetime,
    state_badge_html,
    task_search_q,
)
from tasks.admin.confirmation import ConfirmedActionsMixin, admin_action
from tasks.admin.exports import export_csv, export_json
from tasks.admin.lists import CachedValuesFilter, CappedCountPaginator
from tasks.admin.task_page import (
    HistoryInline,
    LivePanel,
    TaskAdminForm,
    TaskSubmitForm,
    collapsed_if_default,
    duration_label,
    output_page,
    output_text,
)
from tasks.admin.timeline import build_timeline
from tasks.audit import Channel, signed_in
from tasks.exceptions import TaskError
from tasks.ids import uuid_or_none
from tasks.models import METRIC_FIELDS, Task, TaskQuerySet
from tasks.selectors import task_outputs

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

TRASH_URL_NAME = "tasks_task_trash"

# The add page: a submission, as the API makes one (the task is queued and runs).
SUBMIT_FIELDSETS: _FieldsetSpec = [
    (None, {"fields": ("title", "description", "handler", "payload", "run_at", "owner")}),
    (
        "Queue, retries and limits (blank: the handler's)",
        {"fields": ("queue", "priority", "max_attempts", "retry_backoff", "soft_time_limit", "time_limit")},
    ),
    (
        "Details",
        {
            "fields": sorted(
                services.EDITABLE_FIELDS
                - {"title", "description", "handler", "max_attempts", "retry_backoff", "soft_time_limit", "time_limit"}
            ),
            "classes": ("collapse",),
        },
    ),
    ("Why", {"fields": ("change_reason",)}),
]


def in_trash(request: HttpRequest) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name == TRASH_URL_NAME


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not deleted"), ("yes", "In the trash")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class TaskChangeList(ChangeList):
    """The trash drills down by deletion date instead of creation date."""

    def __init__(self, request: HttpRequest, model: Any, list_display: Any, list_display_links: Any, *args: Any):
        list_filter, date_hierarchy, *rest = args
        if in_trash(request):
            date_hierarchy = "deleted_at"
        super().__init__(request, model, list_display, list_display_links, list_filter, date_hierarchy, *rest)


@admin.register(Task)
class TaskAdmin(ConfirmedActionsMixin, admin.ModelAdmin):
    form = TaskAdminForm
    change_list_template = "admin/tasks/task/change_list.html"
    # Fits a 1440 px screen beside the navigation and the filters: role and provider share a column, the trash
    # mark sits by the state.
    list_display = (
        "short_id",
        "title",
        "status",
        "role_provider",
        "owner",
        "created",
        "duration",
        "attempts",
    )
    trash_list_display = (
        "short_id",
        "title",
        "state_badge",
        "owner",
        "deleted_when",
        "deleted_by",
        "delete_reason_short",
        "created",
    )
    list_display_links = ("short_id", "title")
    list_filter = (
        "state",
        ("role", CachedValuesFilter),
        ("provider", CachedValuesFilter),
        "owner",
        DeletedFilter,
        "created_at",
    )
    trash_list_filter = ("state", "deleted_by", "deleted_at", "owner")
    search_fields = ("title", "description")
    search_help_text = "Search by task id (full, or its first 4+ characters, e.g. the short id), title or description."
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    sortable_by = ("created", "status")
    list_select_related = ("owner",)
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    inlines = [HistoryInline]
    readonly_fields = (
        "id",
        "state_badge",
        "owner",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "duration",
        "attempt_count",
        "celery_task_id",
        "worker_id",
        "dispatched_at",
        "dispatch_count",
        "lease_expires_at",
        "heartbeat_at",
        "result",
        "partial_results",
        "request_payload",
        "last_error",
        "error_count",
        "deleted_at",
        "deleted_by",
        "delete_reason",
        "history_count",
        "history_head",
        "audit_links",
        *METRIC_FIELDS,
    )
    actions = [*(admin_action(spec) for spec in ACTIONS.values()), export_csv, export_json]

    # --- Permissions: one per action (the Task model's custom permissions).

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not in_trash(request) and super().has_add_permission(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        if in_trash(request):
            keep = ACTIONS["restore"].admin_action_name
            actions = {name: value for name, value in actions.items() if name == keep}
        return actions

    # --- The list and the trash.

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("trash/", wrap(self.trash_view), name=TRASH_URL_NAME),
            path("confirm/<slug:action>/", wrap(self.confirm_view), name="tasks_task_confirm"),
            path("<path:object_id>/timeline/", wrap(self.timeline_view), name="tasks_task_timeline"),
            path("<path:object_id>/live/", wrap(self.live_view), name="tasks_task_live"),
            path("<path:object_id>/outputs/", wrap(self.outputs_view), name="tasks_task_outputs"),
            path("<path:object_id>/outputs.txt", wrap(self.outputs_text_view), name="tasks_task_outputs_text"),
            *super().get_urls(),
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        assert isinstance(queryset, TaskQuerySet)  # Task.objects is TaskQuerySet.as_manager()
        return queryset.deleted() if in_trash(request) else queryset

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TaskChangeList

    def get_list_display(self, request: HttpRequest) -> Any:
        return self.trash_list_display if in_trash(request) else self.list_display

    def get_list_filter(self, request: HttpRequest) -> Any:
        return self.trash_list_filter if in_trash(request) else self.list_filter

    def get_list_select_related(self, request: HttpRequest) -> Any:
        return ("owner", "deleted_by") if in_trash(request) else self.list_select_related

    def get_ordering(self, request: HttpRequest) -> Any:
        return ("-deleted_at",) if in_trash(request) else self.ordering

    def get_sortable_by(self, request: HttpRequest) -> Any:
        return ("deleted_when", "created", "state_badge") if in_trash(request) else self.sortable_by

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        terms = search_terms(search_term)
        if not terms:
            return queryset, False
        if len(terms) == 1 and (pk := uuid_or_none(terms[0])) is not None:
            return queryset.filter(pk=pk), False
        for term in terms:
            queryset = queryset.filter(task_search_q(term, self.search_fields))
        return queryset, False

    def trash_view(self, request: HttpRequest) -> HttpResponse:
        return self.changelist_view(
            request,
            extra_context={
                "title": "Trash: soft-deleted tasks",
                "crux_trash": True,
                "tasks_url": reverse("admin:tasks_task_changelist"),
            },
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"trash_url": reverse(f"admin:{TRASH_URL_NAME}"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    # --- Columns.

    @admin.display(description="id")
    def short_id(self, obj: Task) -> str:
        return format_html("<code>{}</code>", str(obj.pk)[:8])

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Task) -> str:
        return state_badge_html(obj.state)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Task) -> str:
        return short_datetime(obj.created_at)

    @admin.display(description="deleted at", ordering="deleted_at")
    def deleted_when(self, obj: Task) -> str:
        return short_datetime(obj.deleted_at)

    @admin.display(description="duration")
    def duration(self, obj: Task) -> str:
        return duration_label(obj)

    @admin.display(description="attempts")
    def attempts(self, obj: Task) -> str:
        return f"{obj.attempt_count}/{obj.max_attempts}"

    @admin.display(description="state", ordering="state")
    def status(self, obj: Task) -> str:
        """The state, and the trash mark (with when and why) on a soft-deleted task."""
        if obj.deleted_at is None:
            return state_badge_html(obj.state)
        title = f"{short_datetime(obj.deleted_at)}: {Truncator(obj.delete_reason).chars(200)}"
        return format_html(
            '{} <span class="crux-deleted" title="{}">in trash</span>', state_badge_html(obj.state), title
        )

    @admin.display(description="role / provider")
    def role_provider(self, obj: Task) -> str:
        return format_html('{}<br><span class="crux-quiet">{}</span>', obj.role or "-", obj.provider or "-")

    @admin.display(description="why deleted")
    def delete_reason_short(self, obj: Task) -> str:
        return Truncator(obj.delete_reason).chars(120)

    @admin.display(description="audit trail")
    def audit_links(self, obj: Task) -> str:
        if obj is None or obj.pk is None or obj._state.adding:
            return "-"
        return format_html(
            '<a href="{}">Timeline</a> · <a href="{}">all {} history rows</a>',
            reverse("admin:tasks_task_timeline", args=[obj.pk]),
            reverse("admin:tasks_taskhistory_changelist") + f"?task__id__exact={obj.pk}",
            obj.history_count,
        )

    # --- The task page.

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> _FieldsetSpec:
        editable = self.has_change_permission(request, obj) if obj is not None else True
        reason: _FieldsetSpec = [("Why", {"fields": ("change_reason",)})] if editable else []
        if obj is None:
            return SUBMIT_FIELDSETS
        repository = (
            "repository_url",
            "target_dir",
            "full_access",
            "branch",
            "base_branch",
            "worktree_path",
            "commit_hash",
        )
        # Progress and phase are in the live panel above the groups, which follows them.
        execution = (
            "attempt_count",
            "max_attempts",
            "celery_task_id",
            "worker_id",
            "dispatched_at",
            "dispatch_count",
            "lease_expires_at",
            "heartbeat_at",
        )
        outcome = ("result", "partial_results", "last_error", "error_count")
        inputs = ("acceptance_criteria", "metadata", "request_payload")
        deletion = ("deleted_at", "deleted_by", "delete_reason")
        return [
            ("Task", {"fields": ("id", "title", "description", "state_badge", "owner", "role", "handler")}),
            ("Audit trail", {"fields": ("audit_links", "history_count", "history_head")}),
            ("Provider", {"fields": ("provider", "model", "provider_override")}),
            ("Repository", {"fields": repository, "classes": collapsed_if_default(obj, repository)}),
            ("Execution", {"fields": execution}),
            ("Timing", {"fields": ("created_at", "updated_at", "started_at", "completed_at", "duration")}),
            ("Outcome", {"fields": outcome, "classes": collapsed_if_default(obj, outcome)}),
            ("Metrics", {"fields": METRIC_FIELDS, "classes": collapsed_if_default(obj, METRIC_FIELDS)}),
            ("Inputs", {"fields": inputs, "classes": collapsed_if_default(obj, inputs)}),
            ("Deletion", {"fields": deletion, "classes": collapsed_if_default(obj, deletion)}),
            *reason,
        ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = TaskSubmitForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [] if obj is None else self.inlines

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj is not None:
            here = reverse("admin:tasks_task_change", args=[obj.pk])
            extra["timeline_url"] = reverse("admin:tasks_task_timeline", args=[obj.pk])
            extra["task_actions"] = self.available_actions(request, obj, next_url=here)
            extra["live"] = LivePanel.of(obj)
            restore = reverse("admin:tasks_task_confirm", args=["restore"])
            extra["restore_url"] = next((a["url"] for a in extra["task_actions"] if a["url"].startswith(restore)), "")
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        """The "History" button opens the task's timeline, built from its own history rows (Django's page lists
        admin LogEntry rows, which the services do not write)."""
        return HttpResponseRedirect(reverse("admin:tasks_task_timeline", args=[object_id]))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except TaskError as exc:
            # The service refused the edit and nothing was written (the transaction rolled back).
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Task, form: forms.ModelForm, change: bool) -> None:
        reason = form.cleaned_data["change_reason"]
        user = signed_in(request.user)
        if change:
            fields = {name: form.cleaned_data[name] for name in form.changed_data if name in services.EDITABLE_FIELDS}
            saved = services.update_task(obj.pk, actor=user, channel=Channel.ADMIN, reason=reason, **fields)
        else:
            assert isinstance(form, TaskSubmitForm)  # get_form's add form
            saved = services.submit_task(
                owner=form.cleaned_data.get("owner") or user,
                actor=user,
                channel=Channel.ADMIN,
                reason=reason or "submitted through the admin",
                run_at=form.cleaned_data.get("run_at"),
                **form.submission(),
            )
        obj.pk = saved.pk
        obj.refresh_from_db()

    # --- The timeline, the live panel and the outputs: pages of one task, for whoever may view it.

    def viewable_task(self, request: HttpRequest, object_id: str) -> Task:
        """The task named in the URL: 404 for an unknown or malformed id, 403 without the view permission."""
        pk = uuid_or_none(object_id)
        task = Task.objects.select_related("owner", "deleted_by").filter(pk=pk).first() if pk else None
        if task is None:
            raise Http404("no such task")
        if not self.has_view_or_change_permission(request, task):
            raise PermissionDenied
        return task

    def live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The live panel alone, for the task page to refresh itself in place (htmx) while the task runs."""
        task = self.viewable_task(request, object_id)
        return TemplateResponse(request, "admin/tasks/task/_live.html", {"task": task, "live": LivePanel.of(task)})

    def outputs_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Every output of the task, oldest first, a page at a time."""
        task = self.viewable_task(request, object_id)
        page = output_page(task, request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Output of {task.title}",
            "subtitle": str(task.pk),
            "task": task,
            "page": page,
            "page_range": list(page.paginator.get_elided_page_range(page.number)),
            "change_url": reverse("admin:tasks_task_change", args=[task.pk]),
            "text_url": reverse("admin:tasks_task_outputs_text", args=[task.pk]),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tasks/task/outputs.html", context)

    def outputs_text_view(self, request: HttpRequest, object_id: str) -> StreamingHttpResponse:
        """Every output of the task as a text file, streamed in chunks (a task may have millions of lines)."""
        task = self.viewable_task(request, object_id)
        lines = output_text(task_outputs(task.pk).iterator(chunk_size=2000))
        response = StreamingHttpResponse(lines, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="task-{task.pk}-outputs.txt"'
        return response

    def timeline_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self.viewable_task(request, object_id)
        timeline = build_timeline(task)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Timeline of {task.title}",
            "subtitle": str(task.pk),
            "task": task,
            "timeline": timeline,
            "change_url": reverse("admin:tasks_task_change", args=[task.pk]),
            "history_url": reverse("admin:tasks_taskhistory_changelist") + f"?task__id__exact={task.pk}",
            "task_actions": self.available_actions(
                request, task, next_url=reverse("admin:tasks_task_timeline", args=[task.pk])
            ),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tasks/task/timeline.html", context)
