"""PostgreSQL: Crux's connections read times with psycopg's own loader, and read them as Django's loader does."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format

from tasks import services
from tasks.models import Channel, Task

pytestmark = pytest.mark.django_db

TIMES = [
    "2026-12-04 16:30:06.123456+00",
    "2026-12-04 16:30:06.5+00",
    "2026-12-04 16:30:06.000001+00",
    "2026-12-04 16:30:06+00",
    "2026-03-29 01:30:00+02",  # another offset: the session (UTC) answers in its own
    "1969-12-31 23:59:59.999999-05:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


def _on_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("applies to the PostgreSQL run")


def _read(cursor, times: list[str] = TIMES) -> list[datetime]:
    cursor.execute("SELECT t::timestamptz FROM unnest(%s::text[]) WITH ORDINALITY AS times(t, n) ORDER BY n", [times])
    return [row[0] for row in cursor.fetchall()]


def test_times_read_as_djangos_loader_reads_them_in_utc():
    _on_postgresql()
    from crux.postgres.base import TIMESTAMPTZ_OID, _UtcTimesLoader

    with connection.cursor() as cursor:
        assert cursor.cursor.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT) is _UtcTimesLoader
        ours = _read(cursor)
    with connection.cursor() as cursor:
        register_tzloader(UTC, cursor.cursor)  # what Django reads with, registered as Django does on a cursor
        djangos = _read(cursor)
    assert ours == djangos
    assert [value.tzinfo for value in ours] == [UTC] * len(TIMES)
    assert [value.isoformat() for value in ours] == [value.isoformat() for value in djangos]
    assert ours[4] == datetime(2026, 3, 28, 23, 30, tzinfo=UTC)


def test_a_task_s_times_come_back_as_saved(user):
    _on_postgresql()
    moment = datetime(2036, 12, 4, 16, 30, 6, 654321, tzinfo=ZoneInfo("Asia/Kolkata"))
    task = services.submit_task(owner=user, actor=user, channel=Channel.API, title="times", run_at=moment)
    read = Task.objects.get(pk=task.pk)
    assert read.run_after == moment
    assert read.run_after.tzinfo is UTC
    assert read.created_at == task.created_at


def test_a_database_in_another_zone_keeps_djangos_loader():
    """DATABASES' TIME_ZONE: Django sets the session to that zone and reads times in it, with its own loader."""
    _on_postgresql()
    from crux.postgres.base import TIMESTAMPTZ_OID, _UtcTimesLoader

    paris = connection.copy()
    paris.settings_dict = {**paris.settings_dict, "TIME_ZONE": "Europe/Paris"}
    try:
        with paris.cursor() as cursor:
            assert cursor.cursor.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT) is not _UtcTimesLoader
            read = _read(cursor, TIMES[:6])  # the last two are outside Python's years in Paris
    finally:
        paris.close()
    assert read[0] == datetime(2026, 12, 4, 16, 30, 6, 123456, tzinfo=UTC)
    assert read[0].tzinfo == ZoneInfo("Europe/Paris")
