"""Times in API answers: in the default time zone (TIME_ZONE), which the shared serializer fields resolve when they
are built, not once for every time they render."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from django.utils import timezone

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db

TIME_FIELDS = ("created_at", "updated_at", "started_at", "completed_at")


@pytest.mark.parametrize(("zone", "suffix"), [("UTC", "Z"), ("Asia/Kolkata", "+05:30"), ("America/Lima", "-05:00")])
def test_a_task_s_times_are_in_the_time_zone_setting(
    zone: str, suffix: str, api: Any, task_in: Any, settings: Any
) -> None:
    """Changing TIME_ZONE rebuilds the fields: the list, the detail and the history answer in the new zone, each
    time the same moment as the database holds."""
    task = task_in("completed")
    settings.TIME_ZONE = zone
    listed = api.get("/api/tasks/persistent").data["results"][0]
    detail = api.get(f"/api/tasks/{task.pk}").data
    history = api.get(f"/api/tasks/history/{task.pk}").data
    for field in TIME_FIELDS:
        stored = getattr(task, field)
        for answer in (listed, detail):
            assert answer[field].endswith(suffix), (field, answer[field])
            assert datetime.fromisoformat(answer[field].replace("Z", "+00:00")) == stored
    rows = history["results"] if isinstance(history, dict) else history
    assert rows and all(row["created_at"].endswith(suffix) for row in rows)


def test_rendering_times_looks_the_zone_up_no_more_for_more_tasks(
    api: Any, task_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRF looks up the current zone for every time it renders, through asgiref's Local (2.5 µs each, four or
    more a task): the shared fields hold the default zone instead, so a page of six tasks looks it up as often as
    a page of one."""
    lookups = []
    current_zone = timezone.get_current_timezone

    def counted() -> Any:
        lookups.append(1)
        return current_zone()

    task_in("completed")
    api.get("/api/tasks/persistent")  # the fields are built once, before counting
    monkeypatch.setattr(timezone, "get_current_timezone", counted)
    assert len(api.get("/api/tasks/persistent").data["results"]) == 1
    one = len(lookups)
    for _ in range(5):
        task_in("completed")
    lookups.clear()
    assert len(api.get("/api/tasks/persistent").data["results"]) == 6
    assert len(lookups) == one
