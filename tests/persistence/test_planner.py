"""SQLite's upkeep for reads (persistence.planner), each by a beat job on the housekeeping queue: the planner's
statistics of the task table, taken from FEWEST_TASKS on and again after a quarter of growth, with which a filtered
list with a date range reads the index on all its filters; the search index, merged into one segment (its tests:
tests/tasks/test_search_index.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crux.celery import route_task
from persistence import planner
from persistence.tasks import sqlite_statistics
from tasks import services
from tasks.audit import Channel
from tasks.models import Task
from tests.api_support import client_for

ON_SQLITE = django_settings.DATABASES["default"]["ENGINE"] == "crux.db"
sqlite_only = pytest.mark.skipif(not ON_SQLITE, reason="SQLite's sqlite_stat1; PostgreSQL's autovacuum keeps its own")
PROVIDERS, ROLES = ("claude", "openai", "gemini"), ("backend", "frontend", "docs", "ops")


@pytest.fixture
def statistics(live_db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Committed tasks (ANALYZE reads what is committed), a lower threshold, and no statistics left behind: the
    next test's connection plans without them, as every other test does."""
    monkeypatch.setattr(planner, "FEWEST_TASKS", 100)
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS sqlite_stat1")
    connection.close()  # a connection keeps the statistics it loaded


@pytest.fixture
def submit(django_user_model: Any) -> Callable[[int], None]:
    """``submit(n)``: n more tasks, spread over four owners, three providers and four roles."""
    owners = [django_user_model.objects.create_user(f"planner{i}") for i in range(4)]

    def make(count: int) -> None:
        for owner_index, owner in enumerate(owners):
            items = [
                {"title": f"task {i}", "provider": PROVIDERS[i % 3], "role": ROLES[(i // 3) % 4]}
                for i in range(owner_index, count, len(owners))
            ]
            if items:
                services.submit_batch(owner=owner, actor=owner, channel=Channel.API, items=items)

    return make


def _list_plan() -> str:
    """SQLite's plan for the page of an owner's list filtered by provider, role, states and a week's dates, as the
    API reads it."""
    owner = Task.objects.order_by("pk").first().owner  # type: ignore[union-attr]  # the tests submit tasks first
    now = timezone.now()
    query = {
        "providers": "claude",
        "roles": "backend",
        "states": "queued,completed",
        "date_from": (now - timedelta(days=7)).isoformat(),
        "date_to": now.isoformat(),
    }
    with CaptureQueriesContext(connection) as queries:
        assert client_for(owner).get("/api/tasks/persistent", query).status_code == 200
    [page] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "tasks_task"."id"')]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {page}")
        return " | ".join(row[3] for row in cursor.fetchall())


@sqlite_only
def test_statistics_are_taken_from_the_threshold_on_and_again_after_a_quarter_of_growth(
    statistics: None, submit: Callable[[int], None]
) -> None:
    submit(99)
    assert not planner.refresh_statistics(force=True), "below FEWEST_TASKS: none, forced or not"
    assert planner.analyzed_count() is None
    submit(101)
    assert planner.refresh_statistics() and planner.analyzed_count() == 200
    assert not planner.refresh_statistics(), "fresh: not taken again"
    submit(49)
    assert not planner.refresh_statistics() and planner.analyzed_count() == 200, "249 is under a quarter more"
    submit(1)
    assert planner.refresh_statistics() and planner.analyzed_count() == 250
    assert planner.refresh_statistics(force=True) and planner.analyzed_count() == 250


@sqlite_only
def test_with_statistics_a_filtered_date_range_reads_the_index_on_all_its_filters(
    statistics: None, submit: Callable[[int], None]
) -> None:
    """Without statistics SQLite rates the owner's index as good as the one on owner, provider, role and creation
    time, and takes the smaller; with them it knows each filter narrows the rows, on a connection opened after."""
    submit(480)
    assert "USING INDEX task_owner_created " in _list_plan()
    assert planner.refresh_statistics()
    connection.close()
    assert "USING INDEX task_owner_prov_role_created " in _list_plan()


@sqlite_only
def test_the_beat_job_runs_on_the_housekeeping_queue(statistics: None, submit: Callable[[int], None]) -> None:
    assert django_settings.CELERY_BEAT_SCHEDULE["sqlite-statistics"] == {
        "task": "crux.sqlite_statistics",
        "schedule": django_settings.SQLITE_STATISTICS_SECONDS,
    }
    assert route_task("crux.sqlite_statistics", (), {}, {}) == {"queue": django_settings.CELERY_HOUSEKEEPING_QUEUE}
    submit(100)
    assert sqlite_statistics() is True
    assert sqlite_statistics() is False


@sqlite_only
def test_the_search_index_merge_runs_on_the_housekeeping_queue() -> None:
    assert django_settings.CELERY_BEAT_SCHEDULE["search-index-merge"] == {
        "task": "crux.search_index_merge",
        "schedule": django_settings.SQLITE_SEARCH_MERGE_SECONDS,
    }
    assert route_task("crux.search_index_merge", (), {}, {}) == {"queue": django_settings.CELERY_HOUSEKEEPING_QUEUE}


@pytest.mark.skipif(ON_SQLITE, reason="PostgreSQL's side")
def test_on_postgresql_nothing_is_taken(
    db: Any, submit: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "FEWEST_TASKS", 1)
    submit(4)
    assert planner.refresh_statistics(force=True) is False
    assert planner.analyzed_count() is None
    assert "sqlite-statistics" not in django_settings.CELERY_BEAT_SCHEDULE
    assert (planner.search_segments(), planner.merge_search_index()) == (0, 0)
    assert "search-index-merge" not in django_settings.CELERY_BEAT_SCHEDULE
