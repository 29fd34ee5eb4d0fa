"""A task's times as the database holds them, and every way Crux and Django read or compare them.

On SQLite a time of a task, its history rows and outputs (``tasks.models.CompactDateTimeField``) is an integer of
microseconds since the Unix epoch in UTC; PostgreSQL's ``timestamptz`` is 8 bytes already. Every read must give back
the very microsecond written, and every comparison, truncation and extraction in SQL must agree with Python's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F, Max, Min
from django.db.models.functions import TruncDate, TruncHour, TruncMinute

from persistence import mirror
from tasks import services
from tasks.audit import Channel
from tasks.models import CompactDateTimeField, Task, TaskHistory, TaskOutput
from tasks.selectors import verify_audit_chains

pytestmark = pytest.mark.django_db

# A moment with every part of a time set, the microsecond included, and one before the epoch.
MOMENT = datetime(2026, 3, 29, 1, 59, 58, 999_999, tzinfo=UTC)
BEFORE_EPOCH = datetime(1969, 7, 20, 20, 17, 40, 123_456, tzinfo=UTC)


def time_columns(model) -> list[str]:
    return [f.column for f in model._meta.concrete_fields if isinstance(f, CompactDateTimeField)]


def stored_kinds(model, pk) -> set[str]:
    """The storage types of every non-null time column of ``model``'s row ``pk``."""
    table = model._meta.db_table
    kinds = set()
    with connection.cursor() as cursor:
        for column in time_columns(model):
            function = "typeof" if connection.vendor == "sqlite" else "pg_typeof"
            cursor.execute(
                f"SELECT {function}({column}) FROM {table} WHERE {column} IS NOT NULL AND {model._meta.pk.column} = %s",
                [model._meta.pk.get_db_prep_value(pk, connection)],
            )
            kinds.update(str(kind) for (kind,) in cursor.fetchall())
    return kinds


def set_times(task: Task, **times: datetime) -> None:
    """Write ``times`` into the task's row as its fields store them (these columns are not audited)."""
    Task.objects.filter(pk=task.pk).update(**times)


@pytest.fixture
def task(user):
    task = services.submit_task(owner=user, actor=user, channel=Channel.API, title="timed")
    services.add_output(task.pk, output_type="stdout", content="a line")
    return Task.objects.get(pk=task.pk)


def test_every_time_of_a_task_its_history_and_outputs_is_an_integer_on_sqlite(task):
    expected = {"integer"} if connection.vendor == "sqlite" else {"timestamp with time zone"}
    assert time_columns(Task) and time_columns(TaskHistory) and time_columns(TaskOutput)
    assert stored_kinds(Task, task.pk) == expected
    for row in [*TaskHistory.objects.filter(task=task), *TaskOutput.objects.filter(task=task)]:
        assert stored_kinds(type(row), row.pk) == expected


@pytest.mark.parametrize("moment", [MOMENT, BEFORE_EPOCH], ids=["microseconds", "before-the-epoch"])
def test_every_read_gives_back_the_microsecond_written(task, moment):
    set_times(task, heartbeat_at=moment, lease_expires_at=moment + timedelta(microseconds=1))
    task.refresh_from_db()
    assert task.heartbeat_at == moment and task.lease_expires_at == moment + timedelta(microseconds=1)
    assert Task.objects.values_list("heartbeat_at", flat=True).get() == moment
    assert Task.objects.aggregate(first=Min("heartbeat_at"), last=Max("lease_expires_at")) == {
        "first": moment,
        "last": moment + timedelta(microseconds=1),
    }
    with connection.cursor() as cursor:  # a raw read: the driver's converter (SQLite) reads the integer
        cursor.execute("SELECT heartbeat_at FROM tasks_task")
        (raw,) = cursor.fetchone()
    assert raw.replace(tzinfo=UTC) == moment


def test_comparisons_in_sql_agree_with_python_at_the_microsecond(task):
    set_times(task, heartbeat_at=MOMENT)
    tick = timedelta(microseconds=1)
    tasks = Task.objects.all()
    assert tasks.filter(heartbeat_at=MOMENT).exists()
    assert tasks.filter(heartbeat_at__gte=MOMENT, heartbeat_at__lte=MOMENT).exists()
    assert not tasks.filter(heartbeat_at__gt=MOMENT).exists()
    assert not tasks.filter(heartbeat_at__lt=MOMENT).exists()
    assert tasks.filter(heartbeat_at__range=(MOMENT - tick, MOMENT + tick)).exists()
    assert not tasks.filter(heartbeat_at__range=(MOMENT + tick, MOMENT + 2 * tick)).exists()
    assert tasks.filter(heartbeat_at__lt=F("created_at")).exists(), "two columns compare as their times do"
    assert list(tasks.order_by("heartbeat_at").values_list("heartbeat_at", flat=True)) == [MOMENT]


def test_date_functions_in_sql_read_integer_times(task):
    set_times(task, heartbeat_at=MOMENT, lease_expires_at=MOMENT + timedelta(hours=2, minutes=3))
    tasks = Task.objects.all()
    assert tasks.annotate(hour=TruncHour("heartbeat_at")).values_list("hour", flat=True).get() == MOMENT.replace(
        minute=0, second=0, microsecond=0
    )
    assert tasks.annotate(minute=TruncMinute("heartbeat_at")).values_list("minute", flat=True).get() == (
        MOMENT.replace(second=0, microsecond=0)
    )
    assert tasks.annotate(day=TruncDate("heartbeat_at")).values_list("day", flat=True).get() == MOMENT.date()
    assert tasks.filter(heartbeat_at__date=MOMENT.date()).exists()
    assert tasks.filter(heartbeat_at__year=2026, heartbeat_at__month=3, heartbeat_at__hour=1).exists()
    assert tasks.filter(heartbeat_at__year__gte=2026, heartbeat_at__iso_year=2026).exists()
    assert not tasks.filter(heartbeat_at__year=2025).exists()
    assert not tasks.filter(heartbeat_at__year__lt=2026).exists()
    assert list(tasks.dates("heartbeat_at", "day")) == [MOMENT.date()]
    assert list(tasks.datetimes("heartbeat_at", "hour")) == [MOMENT.replace(minute=0, second=0, microsecond=0)]
    gap = tasks.annotate(gap=F("lease_expires_at") - F("heartbeat_at")).values_list("gap", flat=True).get()
    assert gap == timedelta(hours=2, minutes=3)


def test_the_mirror_reads_times_raw_as_the_orm_does(task):
    """The mirror's rebuild reads rows without the ORM's converters; its entries (times, version) are the same."""
    services.cancel(task.pk, actor=task.owner, channel=Channel.API, reason="give the task more times")
    task.refresh_from_db()
    assert task.completed_at is not None
    rows = [row for batch in mirror.raw_rows(Task.objects.values_list(*mirror.MIRRORED_FIELDS), 10) for row in batch]
    assert mirror.batch_of_rows(rows).payloads == mirror.batch_of_docs([mirror.snapshot_of(task)]).payloads
    assert list(verify_audit_chains()) == []


def test_sqlite_reads_a_time_still_held_as_text(task):
    """Rows written before migration 0020 (which rewrites every one) read back as the same times."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's timestamptz has one form")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_task SET heartbeat_at = %s", ["2026-03-29 01:59:58.999999"])
        cursor.execute("SELECT typeof(heartbeat_at) FROM tasks_task")
        assert cursor.fetchone() == ("text",)
    assert Task.objects.values_list("heartbeat_at", flat=True).get() == MOMENT
    assert Task.objects.annotate(hour=TruncHour("heartbeat_at")).values_list("hour", flat=True).get().hour == 1


def test_sqlite_reads_a_time_in_neither_form_as_django_does(task):
    """Django's own converter reads text that is no time as None; so does the one that also reads integers."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's timestamptz has one form")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_task SET heartbeat_at = %s", ["not a time"])
    assert Task.objects.values_list("heartbeat_at", flat=True).get() is None


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the project's SQLite backend")
@pytest.mark.parametrize("use_tz, zone", [(True, None), (True, "Europe/Paris"), (False, None)])
def test_sqlite_converts_every_kind_of_time_as_django_does(use_tz, zone, settings):
    """The backend's converter gives what Django's gives, for every kind of value a read hands it (a naive time,
    an aware one, text, an integer, None), whatever USE_TZ and the database's TIME_ZONE."""
    from django.db.backends.sqlite3.operations import DatabaseOperations as DjangoOperations

    settings.USE_TZ = use_tz
    original_zone = connection.settings_dict["TIME_ZONE"]
    connection.settings_dict["TIME_ZONE"] = zone
    connection.__dict__.pop("timezone", None)
    try:
        field = Task._meta.get_field("created_at")
        naive = datetime(2026, 3, 29, 1, 59, 58, 999_999)
        for value in (naive, MOMENT, "2026-03-29 01:59:58.999999", 1_774_749_598_999_999, None):
            ours = connection.ops.convert_datetimefield_value(value, field, connection)
            plain = 1_774_749_598_999_999
            djangos = DjangoOperations.convert_datetimefield_value(
                connection.ops, naive if value == plain else value, field, connection
            )
            assert (ours, getattr(ours, "tzinfo", None)) == (djangos, getattr(djangos, "tzinfo", None)), value
    finally:
        connection.settings_dict["TIME_ZONE"] = original_zone
        connection.__dict__.pop("timezone", None)
