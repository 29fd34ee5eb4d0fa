"""The admin index's dashboard, for a user who may see tasks."""

from __future__ import annotations

from typing import Any

from django import template

from crux import dashboard

register = template.Library()


@register.simple_tag
def crux_dashboard(request: Any) -> dict[str, Any] | None:
    """The dashboard figures for a user who may see tasks, else None."""
    if not dashboard.may_see(getattr(request, "user", None)):
        return None
    return dashboard.dashboard()
