"""Limit/offset paging (seed 004) with a cap that is enforced, not silently clamped."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


def _bounded_int(request: Request, name: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"A whole number is required, not {raw[:40]!r}."]}) from None
    if value < minimum:
        raise ValidationError({name: [f"Must be at least {minimum}."]})
    if maximum is not None and value > maximum:
        raise ValidationError({name: [f"Must be at most {maximum} (API_MAX_LIMIT); page with offset."]})
    return value


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``limit`` (1..API_MAX_LIMIT, default API_PAGE_SIZE) and ``offset`` (>= 0); anything else is a 400."""

    @property
    def default_limit(self) -> int:  # type: ignore[override]
        return settings.API_PAGE_SIZE

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _bounded_int(
            request, self.limit_query_param, default=self.default_limit, minimum=1, maximum=self.max_limit
        )

    def get_offset(self, request: Request) -> int:
        return _bounded_int(request, self.offset_query_param, default=0, minimum=0)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"].update(minimum=1, maximum=self.max_limit, default=self.default_limit)
        limit["description"] = f"Page size, 1 to {self.max_limit} (API_MAX_LIMIT); larger values answer 400."
        offset["schema"].update(minimum=0, default=0)
        offset["description"] = "Number of tasks to skip; must not be negative."
        return [limit, offset]
