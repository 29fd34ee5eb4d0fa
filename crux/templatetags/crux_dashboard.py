"""The admin index's dashboard, for a user who may see tasks."""

from __future__ import annotations

from typing import Any

from django import template

from crux import dashboard

register = template.Library()


@register.simple_tag
def crux_dashboard(request: Any) -> dict[str, Any] | None:
    """The dashboard figures for a user who may see tasks, else None."""
    user = getattr(request, "user", None)
    if user is None or not (user.has_perm("tasks.view_task") or user.has_perm("tasks.change_task")):
        return None
    return dashboard.dashboard()
