"""Limit/offset paging with a cap that is enforced, not silently clamped.

Counting every match of a filter is the one part of a list that grows with the
table (an exact ``COUNT(*)`` over 1M tasks costs more than the page itself). A
page that is not full ends the matches, so its count is exact for free; else task
lists count only among the API_COUNT_WINDOW newest tasks
(``tasks.selectors.lists``), and every list at most API_EXACT_COUNT_LIMIT past the
requested page. Beyond either, ``count`` is a lower bound and ``count_exact`` is false.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from tasks.api.fields import BIGINT_MAX, parse_query_integer, repeated_parameter, repeated_parameter_message
from tasks.models import TaskQuerySet
from tasks.selectors import task_page


def _bounded_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """The query parameter ``name`` as parse_query_integer reads it; a refusal is a 400 naming ``name``."""
    if repeated_parameter(request.query_params, name):
        raise ValidationError({name: [repeated_parameter_message(name)]})
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return parse_query_integer(raw, minimum=minimum, maximum=maximum)
    except ValidationError as exc:
        raise ValidationError({name: exc.detail}) from None


# SQL's OFFSET is a signed 64-bit integer on SQLite and PostgreSQL.
MAX_OFFSET = BIGINT_MAX


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``limit`` (1..API_MAX_LIMIT, default API_PAGE_SIZE) and ``offset`` (0..MAX_OFFSET); anything else is a 400."""

    @property
    def default_limit(self) -> int:  # type: ignore[override]  # DRF: an attribute; here settings, read when used
        return settings.API_PAGE_SIZE

    @property
    def max_limit(self) -> int:  # type: ignore[override]  # DRF: an attribute; here settings, read when used
        return settings.API_MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _bounded_int(
            request, self.limit_query_param, default=self.default_limit, minimum=1, maximum=self.max_limit
        )

    def get_offset(self, request: Request) -> int:
        return _bounded_int(request, self.offset_query_param, default=0, minimum=0, maximum=MAX_OFFSET)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        """Task lists through ``task_page`` (the count in the newest-tasks window); other lists counted as
        ``get_count`` does."""
        if not isinstance(queryset, TaskQuerySet):
            return super().paginate_queryset(queryset, request, view)
        self.request = request
        self.limit, self.offset = self.get_limit(request), self.get_offset(request)
        page = task_page(
            queryset, offset=self.offset, limit=self.limit, cap=self._count_cap(), window=settings.API_COUNT_WINDOW
        )
        self.count, self.count_exact = page.count, page.exact
        self.display_page_controls = self.count > self.limit and self.template is not None
        return page.tasks

    def _count_cap(self) -> int:
        assert self.request is not None and self.limit is not None  # set by paginate_queryset before it counts
        # The SQL LIMIT is a 64-bit integer too: the count's bound stays within it whatever the offset.
        return min(self.get_offset(self.request) + self.limit + settings.API_EXACT_COUNT_LIMIT, BIGINT_MAX - 1)

    def get_count(self, queryset: Any) -> int:
        bound = self._count_cap()
        counted = queryset.order_by()[: bound + 1].count()
        self.count_exact = counted <= bound
        return min(counted, bound)

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        response.data["count_exact"] = self.count_exact
        return response

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = ["count", "count_exact", "next", "previous", "results"]
        paginated["properties"]["count"]["description"] = (
            "Matching tasks: exact when count_exact is true, else a lower bound (API_COUNT_WINDOW, "
            "API_EXACT_COUNT_LIMIT)."
        )
        paginated["properties"]["count_exact"] = {"type": "boolean"}
        return paginated

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"].update(minimum=1, maximum=self.max_limit, default=self.default_limit)
        limit["description"] = f"Page size, 1 to {self.max_limit} (API_MAX_LIMIT); larger values answer 400."
        offset["schema"].update(minimum=0, maximum=MAX_OFFSET, default=0)
        offset["description"] = "Number of tasks to skip, 0 to 2^63 - 1 (a SQL OFFSET); other values answer 400."
        return [limit, offset]
