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
from django.db.models import Field, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.text import Truncator

from tasks import services
from tasks.admin.actions import (
    ACTIONS,
    MAX_TASKS_PER_ACTION,
    ActionSpec,
    ConfirmActionForm,
    parse_ids,
    perform,
)
from tasks.admin.base import (
    ReadOnlyInline,
    search_terms,
    short_datetime,
    state_badge_html,
    task_search_q,
    transition_html,
)
from tasks.admin.lists import CachedValuesFilter, CappedCountPaginator
from tasks.admin.timeline import build_timeline, format_duration
from tasks.audit import Channel, signed_in
from tasks.exceptions import TaskError
from tasks.ids import uuid_or_none
from tasks.models import (
    Task,
    TaskHistory,
    TaskMetrics,
    TaskOutput,
    TaskQuerySet,
)

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

TRASH_URL_NAME = "tasks_task_trash"


def in_trash(request: HttpRequest) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name == TRASH_URL_NAME


def collapsed_if_default(obj: Task, names: tuple[str, ...]) -> tuple[str, ...]:
    """Collapse a group of the task page whose fields all hold their defaults (nothing to read there)."""
    for name in names:
        field = Task._meta.get_field(name)
        assert isinstance(field, Field)  # the groups name the task's own columns
        if getattr(obj, field.attname) != field.get_default():
            return ()
    return ("collapse",)


INLINE_ROWS = 100


class LatestHistoryFormSet(forms.BaseInlineFormSet):
    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        head = getattr(self.instance, "history_count", 0) or 0
        return queryset.filter(seq__gt=head - INLINE_ROWS) if head > INLINE_ROWS else queryset


class HistoryInline(ReadOnlyInline):
    model = TaskHistory
    formset = LatestHistoryFormSet
    verbose_name_plural = f"history (newest first; the latest {INLINE_ROWS} rows, see the timeline for all)"
    fields = ("seq", "created_at", "event", "transition", "actor", "channel", "reason")
    readonly_fields = fields
    ordering = ("-seq",)

    @admin.display(description="state")
    def transition(self, obj: TaskHistory) -> str:
        return transition_html(obj)


class LatestOutputsFormSet(forms.BaseInlineFormSet):
    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        latest = TaskOutput.objects.filter(task=self.instance).order_by("-created_at", "-id").values("id")
        return queryset.filter(id__in=latest[:INLINE_ROWS])


class OutputInline(ReadOnlyInline):
    model = TaskOutput
    formset = LatestOutputsFormSet
    verbose_name_plural = f"outputs (the latest {INLINE_ROWS})"
    fields = ("created_at", "output_type", "preview", "file_path", "file_size", "commit_hash", "branch")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    @admin.display(description="content")
    def preview(self, obj: TaskOutput) -> str:
        return format_html("<pre class='crux-pre'>{}</pre>", Truncator(obj.content).chars(2000))


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
        "updated_at",
    )
    readonly_fields = fields


class TaskAdminForm(forms.ModelForm):
    change_reason = forms.CharField(
        max_length=500, help_text="Why you are making this change; recorded in the task's history."
    )

    class Meta:
        model = Task
        fields = sorted(services.EDITABLE_FIELDS)


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


def _action(spec: ActionSpec) -> Any:
    def action(modeladmin: TaskAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        ids = list(queryset.order_by().values_list("pk", flat=True)[: MAX_TASKS_PER_ACTION + 1])
        return modeladmin.confirm_view(request, spec.name, ids=ids, next_url=request.get_full_path())

    action.__name__ = spec.admin_action_name
    return admin.action(description=f"{spec.title}…", permissions=[spec.name])(action)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskAdminForm
    change_list_template = "admin/tasks/task/change_list.html"
    list_display = (
        "short_id",
        "title",
        "state_badge",
        "role",
        "provider",
        "owner",
        "created",
        "duration",
        "attempts",
        "deleted",
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
    sortable_by = ("created", "state_badge")
    list_select_related = ("owner",)
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    inlines = [MetricsInline, OutputInline, HistoryInline]
    readonly_fields = (
        "id",
        "state_badge",
        "owner",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "duration",
        "progress",
        "current_phase",
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
    )
    actions = [_action(spec) for spec in ACTIONS.values()]

    # --- Permissions: one per action (the Task model's custom permissions).

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not in_trash(request) and super().has_add_permission(request)

    def has_action_permission(self, request: HttpRequest, spec: ActionSpec) -> bool:
        return request.user.is_active and request.user.is_staff and request.user.has_perm(spec.perm)

    def has_soft_delete_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["soft_delete"])

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["restore"])

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["requeue"])

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["cancel"])

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
        if obj.started_at is None:
            return "-"
        end = obj.completed_at or (timezone.now() if obj.state == "running" else None)
        if end is None:
            return "-"
        return format_duration(end - obj.started_at) + ("…" if obj.completed_at is None else "")

    @admin.display(description="attempts")
    def attempts(self, obj: Task) -> str:
        return f"{obj.attempt_count}/{obj.max_attempts}"

    @admin.display(description="deleted")
    def deleted(self, obj: Task) -> str:
        if obj.deleted_at is None:
            return "-"
        when = timezone.localtime(obj.deleted_at).strftime("%Y-%m-%d %H:%M")
        title = f"{when}: {Truncator(obj.delete_reason).chars(200)}"
        return format_html('<span class="crux-deleted" title="{}">in trash</span>', title)

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
            return [(None, {"fields": sorted(services.EDITABLE_FIELDS)}), *reason]
        repository = (
            "repository_url",
            "target_dir",
            "full_access",
            "branch",
            "base_branch",
            "worktree_path",
            "commit_hash",
        )
        execution = (
            "progress",
            "current_phase",
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
            ("Inputs", {"fields": inputs, "classes": collapsed_if_default(obj, inputs)}),
            ("Deletion", {"fields": deletion, "classes": collapsed_if_default(obj, deletion)}),
            *reason,
        ]

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
        return super().change_view(request, object_id, form_url, extra_context=extra)

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
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in services.EDITABLE_FIELDS}
        reason = form.cleaned_data["change_reason"]
        user = signed_in(request.user)
        if change:
            saved = services.update_task(obj.pk, actor=user, channel=Channel.ADMIN, reason=reason, **fields)
        else:
            saved = services.create_task(owner=user, actor=user, channel=Channel.ADMIN, reason=reason, **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def available_actions(self, request: HttpRequest, obj: Task, *, next_url: str) -> list[dict[str, Any]]:
        """The action buttons of a task page: those the user may use and that apply to this task."""
        buttons = []
        for spec in ACTIONS.values():
            if self.has_action_permission(request, spec) and spec.skip_reason(obj) is None:
                query = urlencode({"ids": str(obj.pk), "next": next_url})
                url = reverse("admin:tasks_task_confirm", args=[spec.name]) + "?" + query
                buttons.append({"url": url, "label": spec.verb.capitalize(), "danger": spec.danger})
        return buttons

    # --- Confirmation pages.

    def confirm_view(
        self,
        request: HttpRequest,
        action: str,
        *,
        ids: list[Any] | None = None,
        next_url: str | None = None,
    ) -> HttpResponse:
        """GET (or a changelist action): the confirmation page. POST with ``confirm=yes``: do it."""
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404(f"no action {action!r}")
        if not self.has_action_permission(request, spec):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        if ids is None:
            ids, invalid = parse_ids(data.getlist("ids"))
        else:
            invalid = []
        next_url = self._safe_next(request, next_url or data.get("next"))
        if not ids:
            self.message_user(request, "No tasks were selected.", messages.WARNING)
            return HttpResponseRedirect(next_url)
        if len(ids) > MAX_TASKS_PER_ACTION:
            self.message_user(
                request,
                f"At most {MAX_TASKS_PER_ACTION} tasks per action: narrow the selection with a filter.",
                messages.ERROR,
            )
            return HttpResponseRedirect(next_url)

        form = ConfirmActionForm(request.POST if "confirm" in request.POST else None)
        if request.POST.get("confirm") == "yes" and form.is_valid():
            outcome = perform(spec, ids, user=signed_in(request.user), reason=form.cleaned_data["reason"])
            self._report(request, spec, outcome, form.cleaned_data["reason"])
            return HttpResponseRedirect(next_url)

        found = Task.objects.select_related("owner", "deleted_by").in_bulk(ids)
        rows, skipped = [], []
        for pk in ids:
            task = found.get(pk)
            if task is None:
                invalid.append(str(pk))
            elif (why := spec.skip_reason(task)) is not None:
                skipped.append({"task": task, "why": why})
            else:
                rows.append({"task": task, "note": spec.note(task)})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": spec.title,
            "spec": spec,
            "rows": rows,
            "skipped": skipped,
            "invalid": invalid,
            "form": form,
            "next_url": next_url,
            "action_url": reverse("admin:tasks_task_confirm", args=[spec.name]),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tasks/task/confirm_action.html", context)

    def _safe_next(self, request: HttpRequest, next_url: str | None) -> str:
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return next_url
        return reverse("admin:tasks_task_changelist")

    def _report(self, request: HttpRequest, spec: ActionSpec, outcome: Any, reason: str) -> None:
        for task in outcome.done:
            self.log_change(request, task, f"{spec.past.capitalize()} through the admin: {reason}")
        if outcome.done:
            ids = ", ".join(str(t.pk)[:8] for t in outcome.done[:20]) + ("…" if len(outcome.done) > 20 else "")
            count = len(outcome.done)
            self.message_user(
                request, f"{spec.past.capitalize()} {count} task{'s' if count != 1 else ''}: {ids}.", messages.SUCCESS
            )
        if outcome.skipped:
            lines = format_html_join(
                "", "<li><code>{}</code>: {}</li>", ((str(t.pk)[:8], why) for t, why in outcome.skipped[:20])
            )
            self.message_user(
                request,
                format_html("Skipped {} task(s) that changed meanwhile:<ul>{}</ul>", len(outcome.skipped), lines),
                messages.WARNING,
            )
        if outcome.failed:
            lines = format_html_join(
                "",
                "<li><code>{}</code>: {}</li>",
                ((str(getattr(t, "pk", t))[:8], error) for t, error in outcome.failed[:20]),
            )
            more = f" (and {len(outcome.failed) - 20} more)" if len(outcome.failed) > 20 else ""
            self.message_user(
                request,
                format_html("Could not {} {} task(s){}:<ul>{}</ul>", spec.verb, len(outcome.failed), more, lines),
                messages.ERROR,
            )

    # --- The timeline.

    def timeline_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        pk = uuid_or_none(object_id)
        task = Task.objects.select_related("owner", "deleted_by").filter(pk=pk).first() if pk else None
        if task is None:
            raise Http404("no such task")
        if not self.has_view_or_change_permission(request, task):
            raise PermissionDenied
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
