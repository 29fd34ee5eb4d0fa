"""Query parameters of the task lists (seed 004: states, roles, providers, search, date_from, date_to).

Built on django-filter, so every invalid value answers 400 naming its parameter.
``limit`` and ``offset`` are the paginator's (tasks.api.pagination).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import reduce
from operator import and_
from typing import Any

from django import forms
from django.db import connections
from django.db.models import BooleanField, Expression, Q
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import PermissionDenied

from tasks.api.permissions import may_see_deleted
from tasks.models import Task, TaskQuerySet
from tasks.states import TaskState

SEARCH_MAX_LENGTH = 200
# SQLite: at most this many candidate rows are taken from the trigram index (tasks.db_triggers.SEARCH_TABLE).
# Words found in more rows than that are common enough for the plain scan in list order to fill a page
# (and the capped count) sooner than reading every candidate would.
SEARCH_CANDIDATE_LIMIT = 20_000


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


class RFC3339DateTimeField(IsoDateTimeField):
    """A date-time with its time zone, as OpenAPI's ``date-time`` states (no date-only, no naive times)."""

    def to_python(self, value: Any) -> datetime | None:
        if value is not None and not RFC3339.match(value):
            raise forms.ValidationError(
                "Enter an RFC 3339 date-time with a time zone, e.g. 2024-01-01T00:00:00Z.", code="invalid"
            )
        parsed = super().to_python(value)
        try:  # in UTC: PostgreSQL refuses offsets beyond 15:59 that Python accepts
            return None if parsed is None else parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("The date-time is out of range in UTC.", code="invalid") from None


class DateTimeFilter(filters.IsoDateTimeFilter):
    field_class = RFC3339DateTimeField


class ChoiceInFilter(filters.BaseInFilter, filters.ChoiceFilter):
    """Comma-separated values, each one of the choices."""


class CharInFilter(filters.BaseInFilter, filters.CharFilter):
    """Comma-separated free values."""


# Parameters whose empty value is refused rather than ignored (a client bug, not "no filter").
NO_EMPTY_VALUE = ("include_deleted",)
NO_EMPTY_ITEM = ("states", "ordering")


class TaskFilterForm(forms.Form):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in NO_EMPTY_VALUE:
            if self.data.get(name) == "":
                self.add_error(name, "Give a value, or leave the parameter out.")
        for name in NO_EMPTY_ITEM:
            raw = self.data.get(name)
            if raw is not None and "" in raw.split(","):
                self.add_error(name, "Remove the empty item from the comma-separated list (or the parameter).")
        return cleaned


class TaskFilter(filters.FilterSet):
    states = ChoiceInFilter(
        field_name="state",
        choices=TaskState.choices,
        help_text="Comma-separated states, e.g. `running,queued`.",
    )
    roles = CharInFilter(field_name="role", help_text="Comma-separated roles, e.g. `backend,frontend`.")
    providers = CharInFilter(field_name="provider", help_text="Comma-separated providers, e.g. `claude`.")
    search = filters.CharFilter(
        method="filter_search",
        max_length=SEARCH_MAX_LENGTH,
        help_text="Words that must each appear in the title or the description (case-insensitive).",
    )
    date_from = DateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after (RFC 3339 with time zone)."
    )
    date_to = DateTimeFilter(
        field_name="created_at", lookup_expr="lte", help_text="Created at or before (RFC 3339 with time zone)."
    )
    include_deleted = filters.ChoiceFilter(
        choices=[("true", "true"), ("false", "false")],
        method="filter_include_deleted",
        empty_label=None,
        help_text="`true` also lists soft-deleted tasks (staff, or holders of tasks.restore_task).",
    )
    ordering = filters.OrderingFilter(
        fields=("created_at", "updated_at", "completed_at", "title", "state", "role", "provider"),
        help_text="Sort keys, comma-separated, `-` for descending; default `-created_at`.",
    )

    class Meta:
        model = Task
        fields: list[str] = []
        form = TaskFilterForm

    def filter_search(self, queryset: TaskQuerySet, name: str, value: str) -> TaskQuerySet:
        return search_tasks(queryset, value.split())

    def filter_include_deleted(self, queryset: TaskQuerySet, name: str, value: str) -> TaskQuerySet:
        return queryset  # applied in filter_queryset, which also runs when the parameter is absent

    def filter_queryset(self, queryset: TaskQuerySet) -> TaskQuerySet:
        if self.form.cleaned_data.get("include_deleted") == "true":
            if not may_see_deleted(self.request.user):
                raise PermissionDenied(
                    "include_deleted: only staff or holders of tasks.restore_task see deleted tasks."
                )
        else:
            queryset = queryset.alive()
        return super().filter_queryset(queryset)


def search_tasks(queryset: TaskQuerySet, terms: list[str]) -> TaskQuerySet:
    """Tasks whose title or description holds every term, case-insensitively (``icontains``).

    The condition is always the same ``icontains`` per term. On PostgreSQL it uses the pg_trgm indexes
    as it stands; on SQLite the trigram FTS table first narrows it to candidate rows (a superset of the
    matches), unless the terms are too common for that to pay (SEARCH_CANDIDATE_LIMIT).
    """
    if not terms:
        return queryset
    connection = connections[queryset.db]
    if connection.vendor == "sqlite":
        candidates = _sqlite_candidates(connection, terms)
        if candidates == "[]":
            return queryset.none()
        if candidates is not None:
            queryset = queryset.filter(_RowIdIn(candidates))
    return queryset.filter(reduce(and_, (Q(title__icontains=t) | Q(description__icontains=t) for t in terms)))


def _trigram_query(terms: list[str]) -> str | None:
    """An FTS5 query for the rows holding the first and the last trigram of every term of 3+ characters
    (None: no such term).

    Every row ``icontains`` matches holds them: the trigram tokenizer folds case as ``LIKE`` does (and
    more, beyond ASCII). More trigrams per word would narrow the candidates little (a word's trigrams go
    together) and cost a doclist each. Quoted, so that no character is FTS5 syntax."""
    trigrams: dict[str, None] = {}
    for term in terms:
        if len(term) >= 3:
            trigrams.update(dict.fromkeys((term[:3], term[-3:])))
    if not trigrams:
        return None
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in trigrams)


def _sqlite_candidates(connection: Any, terms: list[str]) -> str | None:
    """The rowids (a JSON array) of the rows holding every term's trigrams, or None: no term of 3+
    characters, or more than SEARCH_CANDIDATE_LIMIT such rows."""
    from tasks.db_triggers import SEARCH_TABLE

    query = _trigram_query(terms)
    if query is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), json_group_array(rowid) FROM (SELECT rowid FROM {SEARCH_TABLE} "
            f"WHERE {SEARCH_TABLE} MATCH %s LIMIT %s)",
            [query, SEARCH_CANDIDATE_LIMIT + 1],
        )
        count, rowids = cursor.fetchone()
    return None if count > SEARCH_CANDIDATE_LIMIT else rowids


class _RowIdIn(Expression):
    """SQLite: the task's implicit rowid is in a JSON array (the search index's candidates)."""

    output_field = BooleanField()

    def __init__(self, rowids: str, alias: str | None = None) -> None:
        super().__init__()
        self.rowids, self.alias = rowids, alias

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> _RowIdIn:
        resolved = self.copy()
        resolved.alias = query.get_initial_alias()
        return resolved

    def relabeled_clone(self, change_map: dict[str, str]) -> _RowIdIn:
        clone = self.copy()
        clone.alias = change_map.get(self.alias, self.alias)
        return clone

    def get_group_by_cols(self) -> list:
        return []

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list]:
        table = compiler.quote_name_unless_alias(self.alias)
        return f"{table}.rowid IN (SELECT value FROM json_each(%s))", [self.rowids]
