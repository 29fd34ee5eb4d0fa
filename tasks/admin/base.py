"""What every admin page of the task app shares: read-only bases, display helpers, the search of ids and text."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q
from django.http import HttpRequest
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal

from tasks.admin.lists import id_prefix_q
from tasks.admin.timeline import state_colour
from tasks.models import TaskHistory


def can_view_tasks(request: HttpRequest) -> bool:
    return request.user.has_perm("tasks.view_task") or request.user.has_perm("tasks.change_task")


def state_badge_html(state: str) -> str:
    return format_html('<span class="crux-state" style="background:{}">{}</span>', state_colour(state), state)


def short_datetime(value: Any) -> str:
    """A timestamp as every admin page shows one (DATETIME_FORMAT: to the second)."""
    return "-" if value is None else formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def transition_html(row: TaskHistory) -> str:
    if row.state_from and row.state_from != row.state_to:
        return format_html("{} → {}", state_badge_html(row.state_from), state_badge_html(row.state_to))
    return state_badge_html(row.state_to)


def task_search_q(term: str, text_fields: tuple[str, ...], id_field: str = "pk") -> Q:
    """One search term: a task id (full, or a prefix such as the 8-character short id) or text.

    A term of eight or more hex digits (a short id or longer) is searched as an id
    only: an indexed range instead of a scan of every title and description (2 s at
    1M tasks). Shorter hex terms ("cafe") match ids and text.
    """
    id_q = id_prefix_q(term, id_field)
    if id_q is not None and len(term.replace("-", "")) >= 8:
        return id_q
    q = Q()
    for name in text_fields:
        q |= Q(**{f"{name}__icontains": term})
    return q | id_q if id_q is not None else q


def search_terms(search_term: str) -> list[str]:
    terms = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        if bit.strip():
            terms.append(bit.strip())
    return terms


class ReadOnlyInline(admin.TabularInline):
    """An inline that nobody edits; visible to whoever may view the task."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_view_tasks(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Inlines show the latest rows; the timeline and the history list show everything.
class ReadOnlyAdmin(admin.ModelAdmin):
    """Nobody adds, changes or deletes, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
