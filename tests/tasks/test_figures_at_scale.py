"""The counts the dashboard, the stats and /metrics read, in the forms that stay fast at a million tasks: by state,
role and provider, all tasks counted from an index less the trash's; a time truncated to its hour, minute or
second of UTC by arithmetic in SQLite's SQL, the same instant Django's function gives; a day's chart in UTC hours
whatever the time zone; the last recovery read from the partial index of the recovery sweep's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.models.functions import TruncHour, TruncMinute, TruncSecond
from django.utils import timezone

from tasks import selectors, services
from tasks.audit import Channel
from tasks.models import Task, TaskHistory
from tasks.states import TaskState

pytestmark = pytest.mark.django_db


def test_live_counts_leave_the_trash_out_and_every_count_keeps_it(user: Any, make_task: Any) -> None:
    kept = [make_task(title=f"kept {i}", role="coder", provider="anthropic") for i in range(3)]
    binned = [make_task(title=f"binned {i}", role="reviewer", provider="openai") for i in range(2)]
    make_task(title="mixed", role="reviewer", provider="anthropic")
    services.cancel(kept[0].pk, actor=user, channel=Channel.API, reason="not needed")
    for task in binned:
        services.soft_delete(task.pk, user=user, channel=Channel.API, reason="cleanup")

    alive = selectors.count_by_state()
    assert alive[TaskState.PENDING] == 3 and alive[TaskState.CANCELLED] == 1 and sum(alive.values()) == 4
    every = selectors.count_by_state(include_deleted=True)
    assert every[TaskState.PENDING] == 5 and sum(every.values()) == 6
    assert set(every) == set(TaskState.values)  # zeros listed
    together = selectors.count_alive_by("provider", "role")  # one count over both, read once
    # No live task holds "openai": left out.
    assert together == {"provider": {"anthropic": 4}, "role": {"coder": 3, "reviewer": 1}}
    assert selectors.count_alive_by("role") == {"role": together["role"]}
    services.restore(binned[0].pk, user=user, channel=Channel.API, reason="needed after all")
    assert selectors.count_alive_by("provider", "role") == {
        "provider": {"anthropic": 4, "openai": 1},
        "role": {"coder": 3, "reviewer": 2},
    }


# Times around the units' edges, as integers of microseconds on SQLite; Django's function is the reference.
EDGES = [
    datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC),
    datetime(2026, 12, 2, 9, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 12, 2, 10, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 30, 500_000, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 30, 15, 250_000, tzinfo=UTC),  # before 1970: Django's function, not the arithmetic
]


@pytest.mark.parametrize("trunc", [TruncHour, TruncMinute, TruncSecond])
def test_a_truncated_time_is_the_instant_djangos_truncation_gives(user: Any, make_task: Any, trunc: Any) -> None:
    tasks = {make_task(title=f"edge {i}").pk: moment for i, moment in enumerate(EDGES)}
    for pk, moment in tasks.items():
        Task.objects.filter(pk=pk).update(heartbeat_at=moment)  # untracked: no history row
    unit = {TruncHour: "hour", TruncMinute: "minute", TruncSecond: "second"}[trunc]
    rows = Task.objects.filter(pk__in=tasks).annotate(bucket=trunc("heartbeat_at", tzinfo=UTC))
    for pk, bucket in rows.values_list("pk", "bucket"):
        moment = tasks[pk]
        expected = moment.replace(microsecond=0)
        expected = expected.replace(second=0) if unit in ("hour", "minute") else expected
        expected = expected.replace(minute=0) if unit == "hour" else expected
        assert bucket == expected, (moment, unit)
    if connection.vendor == "sqlite":
        sql = str(rows.query)
        assert "typeof" in sql and "django_datetime_trunc" in sql  # the arithmetic, Django's function beside it


def test_an_hour_of_another_zone_is_truncated_by_djangos_function(make_task: Any) -> None:
    make_task(title="zoned")
    rows = Task.objects.annotate(bucket=TruncHour("created_at", tzinfo=ZoneInfo("Asia/Kolkata")))
    assert "typeof" not in str(rows.query)
    [bucket] = rows.values_list("bucket", flat=True)
    assert bucket.minute == 0 and bucket.utcoffset() == timedelta(minutes=330)  # its hours begin at :30 of UTC's
    assert bucket.astimezone(UTC).minute == 30


def test_the_days_chart_counts_in_hours_of_utc_whatever_the_time_zone(user: Any, make_task: Any, settings: Any) -> None:
    make_task(title="now")
    settings.TIME_ZONE = "Asia/Kolkata"  # half an hour off UTC: its own hours begin at :30 of UTC's
    with timezone.override("Asia/Kolkata"):
        chart = selectors.activity_per_hour(timezone.now(), 24)
    assert chart[-1]["created"] == 1 and sum(hour["created"] for hour in chart) == 1
    assert all(hour["hour"].minute == 0 and hour["hour"].utcoffset() == timedelta(0) for hour in chart)


def test_the_last_recovery_is_the_newest_recovery_row_whatever_came_after(make_task: Any) -> None:
    assert selectors.last_recovery_at() is None
    first, second = make_task(), make_task()
    for task in (first, second):
        services.transition(task.pk, "queued", actor="system:test", channel=Channel.WORKER, reason="t")
        services.transition(task.pk, "running", actor="system:test", channel=Channel.WORKER, reason="t")
    services.transition(second.pk, "interrupted", actor=services.RECOVERY_ACTOR, channel=Channel.RECOVERY, reason="t")
    services.transition(first.pk, "interrupted", actor=services.RECOVERY_ACTOR, channel=Channel.RECOVERY, reason="t")
    services.transition(second.pk, "queued", actor="system:test", channel=Channel.WORKER, reason="later")
    newest = TaskHistory.objects.filter(task=first, state_to="interrupted").get().created_at
    assert selectors.last_recovery_at() == newest


def test_the_last_recovery_reads_the_partial_index_of_recovery_rows() -> None:
    """With the few rows of a test, PostgreSQL's planner would rather scan: forbid it."""
    query = TaskHistory.objects.filter(channel=Channel.RECOVERY).order_by("-created_at").values("created_at")[:1]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # in the test's transaction: SET LOCAL holds until its end
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + ("QUERY PLAN " if connection.vendor == "sqlite" else "") + sql, params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "history_recovery_created" in plan, plan
