"""Template tags of the task admin: a cheap date drill-down, state badges, short durations."""

from __future__ import annotations

import datetime
from typing import Any

from django import template
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from tasks.admin.base import state_badge_html
from tasks.admin.timeline import format_duration

register = template.Library()


@register.filter
def state_badge(state: str) -> str:
    return state_badge_html(state)


@register.filter
def duration(delta: datetime.timedelta | None) -> str:
    """A time span as the admin shows one: 450 ms, 3.2 s, 4 min 05 s."""
    return format_duration(delta)


@register.inclusion_tag("admin/date_hierarchy.html")
def crux_date_hierarchy(cl: Any) -> dict[str, Any]:
    """Django's date drill-down without its DISTINCT scans.

    Django lists the years/months/days that have rows with a ``SELECT DISTINCT``
    over the filtered rows, a full scan on a large table. This lists the calendar
    between the first and last row instead (two index lookups: MIN and MAX), so a
    listed day may have no rows.
    """
    field_name = cl.date_hierarchy
    year_field, month_field, day_field = (f"{field_name}__{part}" for part in ("year", "month", "day"))
    field_generic = f"{field_name}__"
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [field_generic])

    bounds: dict[str, datetime.datetime] | None = None

    def first_last() -> dict[str, datetime.datetime] | None:
        nonlocal bounds
        if bounds is None:
            found = cl.queryset.aggregate(first=Min(field_name), last=Max(field_name))
            if found["first"] is None or found["last"] is None:
                return None
            bounds = {k: timezone.localtime(v) if timezone.is_aware(v) else v for k, v in found.items()}
        return bounds

    if not (year or month or day):
        found = first_last()
        if found is None:
            return {"show": False}
        if found["first"].year == found["last"].year:
            year = found["first"].year
            if found["first"].month == found["last"].month:
                month = found["first"].month

    if year and month and day:
        date = datetime.date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
        }
    found = first_last()
    if year and month:
        days = range(found["first"].day, found["last"].day + 1) if found else ()
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d}),
                    "title": capfirst(formats.date_format(datetime.date(int(year), int(month), d), "MONTH_DAY_FORMAT")),
                }
                for d in days
            ],
        }
    if year:
        months = range(found["first"].month, found["last"].month + 1) if found else ()
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year, month_field: m}),
                    "title": capfirst(formats.date_format(datetime.date(int(year), m, 1), "YEAR_MONTH_FORMAT")),
                }
                for m in months
            ],
        }
    years = range(found["first"].year, found["last"].year + 1) if found else ()
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link({year_field: str(y)}), "title": str(y)} for y in years],
    }
