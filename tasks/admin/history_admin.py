"""Task history in the admin: read-only for everyone, superusers included, searchable by task id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import ShowFacets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from tasks.admin.base import (
    ReadOnlyAdmin,
    can_view_tasks,
    search_terms,
    short_datetime,
    task_search_q,
    transition_html,
)
from tasks.admin.lists import CappedCountPaginator
from tasks.ids import uuid_or_none
from tasks.models import TaskHistory
from tasks.selectors import history_since, previous_link


class WrittenSinceFilter(admin.SimpleListFilter):
    """Rows written in the last hour, day, week or 30 days, read from the first id of that moment on
    (``selectors.history_since``): the history keeps no index on its time."""

    title = "written"
    parameter_name = "written"
    PERIODS = {
        "hour": ("Last hour", timedelta(hours=1)),
        "day": ("Last 24 hours", timedelta(days=1)),
        "week": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.PERIODS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in self.PERIODS:
            return queryset
        return queryset & history_since(timezone.now() - self.PERIODS[str(self.value())][1])


@admin.register(TaskHistory)
class TaskHistoryAdmin(ReadOnlyAdmin):
    list_display = (
        "when",
        "task_link",
        "seq",
        "event",
        "transition",
        "actor",
        "channel",
        "reason_short",
    )
    list_filter = ("event", "channel", "state_to", WrittenSinceFilter)
    search_fields = ("actor", "reason")
    search_help_text = "Search by task id (full, or its first 4+ characters), actor or reason."
    ordering = ("-pk",)  # the order rows were written in: history ids grow with time
    sortable_by = ("when",)
    list_select_related = ("task",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    fields = (
        "task_link",
        "seq",
        "event",
        "state_from",
        "state_to",
        "actor",
        "actor_user",
        "channel",
        "reason",
        "error_message",
        "details",
        "created_at",
        "previous_link",
        "hash",
    )
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or can_view_tasks(request)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        terms = search_terms(search_term)
        if len(terms) == 1 and (pk := uuid_or_none(terms[0])) is not None:
            return queryset.filter(task_id=pk), False
        for term in terms:
            queryset = queryset.filter(task_search_q(term, self.search_fields, id_field="task_id"))
        return queryset, False

    @admin.display(description="when", ordering="pk")
    def when(self, obj: TaskHistory) -> str:
        return short_datetime(obj.created_at)

    @admin.display(description="task")
    def task_link(self, obj: TaskHistory) -> str:
        return format_html(
            '<a href="{}"><code>{}</code> {}</a>',
            reverse("admin:tasks_task_change", args=[obj.task_id]),
            str(obj.task_id)[:8],
            Truncator(obj.task.title).chars(40),
        )

    @admin.display(description="prev hash")
    def previous_link(self, obj: TaskHistory) -> str:
        return previous_link(obj)

    @admin.display(description="state")
    def transition(self, obj: TaskHistory) -> str:
        return transition_html(obj)

    @admin.display(description="reason")
    def reason_short(self, obj: TaskHistory) -> str:
        return Truncator(obj.reason).chars(100)
