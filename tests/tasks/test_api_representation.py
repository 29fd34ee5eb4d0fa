"""A task's representation as the shared serializer fields make it is DRF's own, value for value and type for type.

The shared fields leave out DRF's call where it would give the value back unchanged (text, whole numbers, floats,
booleans, JSON), and make a time's ISO 8601 text directly where its offset is already zero
(``tasks.api.fields.SharedFieldsMixin``). Each case below compares every field with what DRF's generic path gives
for the same instance: the values, and their types (a text choice is equal to its text, and 1 to 1.0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rest_framework import serializers

from tasks.api.serializers import TaskHistorySerializer, TaskSerializer
from tasks.models import Task, TaskHistory
from tasks.states import TaskState

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db

WINTER = datetime(2026, 1, 15, 12, 30, 45, 123_456, tzinfo=UTC)


def typed(representation: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {name: (type(value), value) for name, value in representation.items()}


def assert_drf_s_representation(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """The shared fields' representation of ``instance`` is DRF's generic one; returns it."""
    ours = serializer_class(instance).data
    drfs = serializers.Serializer.to_representation(serializer_class(), instance)
    assert typed(ours) == typed(drfs)
    return ours


def test_a_task_with_every_kind_of_value_is_rendered_as_drf_renders_it(task_in: Any, user: Any) -> None:
    task = task_in(
        "completed",
        description="every kind",
        acceptance_criteria={"tests": ["pass", {"nested": [1, 2.5, True, None]}]},
        metadata={"team": "\u00e9quipe", "count": 3},
        retry_backoff=1.5,
        soft_time_limit=30.0,
        time_limit=60,
    )
    task = Task.objects.get(pk=task.pk)
    task.result = {"answer": 42}
    task.partial_results = [1, "two", {"three": 3.0}]
    task.progress = 1  # a whole number in a float field: DRF gives 1.0
    task.error_count = True  # a boolean in an integer field: DRF gives 1
    task.current_phase = TaskState.RUNNING  # a text choice (a str subclass) in a text field: DRF gives its text
    task.run_after = WINTER.astimezone(ZoneInfo("Europe/London"))  # offset zero, another zone
    task.started_at = WINTER.astimezone(timezone(timedelta(hours=5, minutes=30)))  # converted to UTC
    task.deleted_at = WINTER.replace(tzinfo=None)  # naive: DRF makes it aware
    task.completed_at = datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC)  # before the epoch, no microseconds
    task.delete_reason = ""
    rendered = assert_drf_s_representation(TaskSerializer, task)
    assert (type(rendered["progress"]), type(rendered["error_count"])) == (float, int)
    assert type(rendered["current_phase"]) is str
    assert rendered["run_after"] == "2026-01-15T12:30:45.123456Z"
    assert rendered["started_at"] == "2026-01-15T12:30:45.123456Z"
    assert rendered["completed_at"] == "1969-07-20T20:17:40Z"


def test_a_task_s_history_rows_are_rendered_as_drf_renders_them(task_in: Any) -> None:
    task = task_in("completed")
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    assert len(rows) >= 3
    for row in rows:
        assert_drf_s_representation(TaskHistorySerializer, row)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Europe/London"])
def test_times_are_rendered_as_drf_renders_them_in_every_time_zone_setting(
    zone: str, task_in: Any, settings: Any
) -> None:
    """In a zone other than UTC the shared fields take DRF's path; in UTC they make the text themselves."""
    task = Task.objects.get(pk=task_in("completed").pk)
    settings.TIME_ZONE = zone
    for moment in (WINTER, WINTER + timedelta(days=180), WINTER.astimezone(ZoneInfo("America/Lima"))):
        task.run_after = moment
        rendered = assert_drf_s_representation(TaskSerializer, task)
        assert datetime.fromisoformat(rendered["run_after"]) == moment
