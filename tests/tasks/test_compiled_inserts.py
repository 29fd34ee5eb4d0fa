"""A one-row INSERT compiled once (``tasks.models.insert_statements``), and an UPDATE (``update_statement``): each
later row's statement is the one Django's compiler gives for that row, on both engines; a row with an expression for
a value, or a database whose binary placeholder may not be plain, is compiled in full."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.constants import OnConflict
from django.db.models.functions import Upper
from django.db.models.sql import InsertQuery, UpdateQuery

from tasks import models, services
from tasks.audit import Channel, audited
from tasks.exceptions import TaskChanged
from tasks.models import CeleryResult, Task, TaskHistory, TaskOutput, insert_statements, update_statement
from tasks.redaction import REDACTED
from tasks.services.base import unlocked_task

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)  # what ``auto_now`` writes, the same in both compilations


def compiled_by_django(
    row: Any, fields: Any = None, *, returning: bool = False, **on_conflict: Any
) -> list[tuple[str, tuple[Any, ...]]]:
    query = InsertQuery(type(row), **on_conflict)
    query.insert_values(fields or [f for f in row._meta.concrete_fields if not f.primary_key], [row])
    compiler = query.get_compiler(connection.alias)
    if returning:
        compiler.returning_fields = [row._meta.pk]
    return compiler.as_sql()


def comparable(statements: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """Statements with psycopg's JSON adapters (which define no equality) as the values they wrap."""
    return [(sql, tuple(p.obj if type(p).__name__ == "Jsonb" else p for p in params)) for sql, params in statements]


def tasks_of_every_shape(user: Any) -> list[Task]:
    shapes = [
        {"title": "plain"},
        {"title": "é ✓ 💡", "description": "x" * 5000, "request_payload": {"nested": [1, None, {"a": "b"}]}},
        {"title": "limits", "soft_time_limit": 1.5, "time_limit": 9, "priority": 0, "queue": "", "owner": None},
        {"title": "result", "result": {"answer": 42}, "metadata": {}, "history_head": b"\x00" * 32},
    ]
    return [Task(**{"owner": user, **shape}) for shape in shapes]


def history_rows(user: Any) -> list[TaskHistory]:
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="source")
    services.update_task(task.pk, actor=user, channel=Channel.API, reason="edited", description="changed")
    rows = list(TaskHistory.objects.filter(task=task))
    return [
        TaskHistory(
            **{f.attname: getattr(row, f.attname) for f in TaskHistory._meta.concrete_fields if not f.primary_key}
        )
        for row in rows
    ]


def test_every_later_row_gets_the_statement_django_compiles_for_it(user: Any) -> None:
    models._COMPILED_INSERTS.clear()
    tasks = tasks_of_every_shape(user)
    fields = Task._meta.concrete_fields
    with mock.patch("django.utils.timezone.now", return_value=MOMENT):
        for rows, chosen in ((tasks, fields), (history_rows(user), None)):
            insert_statements(rows[0], connection.alias, chosen)  # compiles and keeps the SQL
            for row in rows[1:]:
                mine = insert_statements(row, connection.alias, chosen)
                assert comparable(mine) == comparable(compiled_by_django(row, chosen)), type(row).__name__
    kept = {key[0]: entry for key, entry in models._COMPILED_INSERTS.items()}
    assert kept[Task] is not None and kept[TaskHistory] is not None  # the later rows took the kept SQL


def test_an_upsert_of_a_result_row_reuses_its_conflict_clause(user: Any) -> None:
    options = CeleryResult._meta
    conflict = {
        "on_conflict": OnConflict.UPDATE,
        "update_fields": [options.get_field(name) for name in ("status", "result", "date_done")],
        "unique_fields": [options.get_field("task_id")],
    }
    rows = [CeleryResult(task_id=f"t{i}", status="SUCCESS", result=f'"{i}"') for i in range(3)]
    with mock.patch("django.utils.timezone.now", return_value=MOMENT):
        for row in rows:
            mine = insert_statements(row, connection.alias, **conflict)
            assert mine == compiled_by_django(row, **conflict)
            assert "ON CONFLICT" in mine[0][0]
    for row in rows:  # and the statements run: one row per task id, updated in place
        with connection.cursor() as cursor:
            cursor.execute(*insert_statements(row, connection.alias, **conflict)[0])
            cursor.execute(*insert_statements(row, connection.alias, **conflict)[0])
    assert CeleryResult.objects.filter(task_id__in=["t0", "t1", "t2"]).count() == 3


def test_a_value_given_as_an_expression_is_compiled_in_full(user: Any) -> None:
    models._COMPILED_INSERTS.clear()
    plain, shouted = tasks_of_every_shape(user)[:2]
    insert_statements(plain, connection.alias)
    shouted.title = Upper(Value("shouted"))
    [(sql, params)] = insert_statements(shouted, connection.alias)
    assert "UPPER" in sql and "shouted" in params
    [kept] = models._COMPILED_INSERTS.values()  # still kept for the next plain row, which takes it
    assert kept is not None and insert_statements(plain, connection.alias)[0][0] == kept.sql


def test_a_database_whose_binary_placeholder_may_not_be_plain_compiles_every_row(user: Any) -> None:
    models._COMPILED_INSERTS.clear()
    plain = tasks_of_every_shape(user)[0]
    with mock.patch.object(connection, "vendor", "mysql"):  # MySQL's is "_binary %s" for bytes, "%s" for None
        insert_statements(plain, connection.alias)
    assert list(models._COMPILED_INSERTS.values()) == [None]


def test_tasks_saved_through_the_kept_sql_read_back_as_written(user: Any) -> None:
    created = [
        services.create_task(owner=user, actor=user, channel=Channel.API, title=f"t{i}", request_payload={"i": i})
        for i in range(3)
    ]
    for task in created:
        stored = Task.objects.get(pk=task.pk)
        assert (stored.title, stored.request_payload, stored.history_count) == (task.title, task.request_payload, 1)
        assert stored.history_head == task.history_head and stored.created_at == task.created_at


def update_compiled_by_django(values: list[tuple[Any, Any, Any]], **where: Any) -> tuple[str, tuple[Any, ...]]:
    query = Task._base_manager.filter(**where).query.chain(UpdateQuery)
    query.add_update_fields(values)
    return query.get_compiler(connection.alias).as_sql()


def saved_values(task: Task, *names: str) -> list[tuple[Any, Any, Any]]:
    """What ``Model._save_table`` hands ``_do_update`` for a save of ``names``: each field with its ``pre_save``."""
    fields = [Task._meta.get_field(name) for name in names]
    return [(field, None, field.pre_save(task, False)) for field in fields]


def test_every_later_update_gets_the_statement_django_compiles_for_it(user: Any) -> None:
    models._COMPILED_UPDATES.clear()
    tasks = tasks_of_every_shape(user)
    with audited(user, channel=Channel.API, reason="shapes"):
        for task in tasks:
            task.save()
    changes = [
        {"state": "running", "worker_id": "w:1:2", "lease_expires_at": MOMENT, "progress": 0.0},
        {"state": "completed", "worker_id": "", "lease_expires_at": None, "progress": 1.0},  # a NULL: its own SQL
        {"state": "queued", "worker_id": "w:é", "lease_expires_at": MOMENT, "progress": 0.5},
    ]
    names = ["state", "worker_id", "lease_expires_at", "progress", "result", "updated_at", "history_head"]
    with mock.patch("django.utils.timezone.now", return_value=MOMENT):
        for task, change in zip(tasks, [*changes, changes[0]], strict=True):
            for name, value in change.items():
                setattr(task, name, value)
            values = saved_values(task, *names)
            for where in ({"pk": task.pk}, {"pk": task.pk, "history_count": 7}):
                mine = update_statement(Task, connection.alias, values, **where)
                assert comparable([mine]) == comparable([update_compiled_by_django(values, **where)]), change
    kept = list(models._COMPILED_UPDATES.values())
    # Three patterns of NULLs (the lease, the result) by two WHEREs; the third task took the first one's statement.
    assert len(kept) == 6 and all(entry is not None for entry in kept)


def test_a_match_on_null_keeps_a_statement_of_its_own(user: Any) -> None:
    """``field=None`` compiles to ``IS NULL``, with no parameter: it never takes the statement of a value."""
    models._COMPILED_UPDATES.clear()
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="nulls")
    values = saved_values(task, "title")
    for run_after in (MOMENT, None, None, MOMENT):  # a value first: its kept statement must not serve the NULL
        where = {"pk": task.pk, "run_after": run_after}
        mine = update_statement(Task, connection.alias, values, **where)
        assert mine == update_compiled_by_django(values, **where)
        assert ("IS NULL" in mine[0]) is (run_after is None)
    assert len(models._COMPILED_UPDATES) == 2 and None not in models._COMPILED_UPDATES.values()


def test_an_update_with_an_expression_is_compiled_in_full(user: Any) -> None:
    models._COMPILED_UPDATES.clear()
    task = tasks_of_every_shape(user)[0]
    with audited(user, channel=Channel.API, reason="plain"):
        task.save()
    update_statement(Task, connection.alias, saved_values(task, "title"), pk=task.pk)
    task.title = Upper(Value("shouted"))
    sql, params = update_statement(Task, connection.alias, saved_values(task, "title"), pk=task.pk)
    assert "UPPER" in sql and "shouted" in params
    assert len(models._COMPILED_UPDATES) == 1  # the plain one, kept


def test_a_save_of_a_stale_read_writes_nothing_through_the_kept_sql(user: Any) -> None:
    """The version check is in the kept UPDATE's WHERE: a save of a task read before another write refuses."""
    models._COMPILED_UPDATES.clear()
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="raced")
    for attempt in range(2):  # the first save of each kind compiles, the second takes the kept statement
        stale, fresh = unlocked_task(task.pk), unlocked_task(task.pk)
        fresh.description = f"fresh {attempt}"
        with transaction.atomic(), audited(user, channel=Channel.API, reason="fresh"):
            fresh.save()
        stale.description = f"stale {attempt}"
        with pytest.raises(TaskChanged), transaction.atomic(), audited(user, channel=Channel.API, reason="stale"):
            stale.save()
        row = Task.objects.get(pk=task.pk)
        assert (row.description, row.history_count) == (f"fresh {attempt}", 2 + attempt)
    assert [entry is not None for entry in models._COMPILED_UPDATES.values()] == [True]


def test_an_output_inserted_through_its_kept_statement_is_the_row_save_writes(user: Any) -> None:
    """A worker's output (``record_output``): redacted, compressed, its id returned; the same row as ``save()``
    writes for it, and each later output's statement the one Django compiles with ``RETURNING``."""
    models._COMPILED_INSERTS.clear()
    task = services.submit_task(owner=user, actor=user, channel=Channel.API, title="outputs", handler="echo")
    claimed = services.claim(task.pk, worker_id="w1")
    assert claimed is not None
    secret = "token sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH"
    contents = [f"line {i} {secret} " + "é" * (i * 900) for i in range(3)]  # the last long enough to compress
    written = [
        services.record_output(task.pk, "log", text, attempt=1, worker_id="w1", file_path=f"/tmp/{i}")
        for i, text in enumerate(contents)
    ]
    assert [o.pk for o in written] == sorted(o.pk for o in written) and not any(o._state.adding for o in written)
    saved = [TaskOutput(task_id=task.pk, output_type="log", content=text, file_path=f"/tmp/{i}") for i, text in
             enumerate(contents)]  # fmt: skip
    for output in saved:
        output.created_at = written[0].created_at
        output.save()
    columns = [f.attname for f in TaskOutput._meta.concrete_fields if f.attname not in ("id", "created_at")]
    rows = {row.pop("id"): row for row in TaskOutput.objects.filter(task=task).values(*columns, "id")}
    assert [rows[o.pk] for o in written] == [rows[o.pk] for o in saved]
    assert REDACTED in rows[written[0].pk]["content"] and secret not in repr(rows)
    later = TaskOutput(task_id=task.pk, output_type="log", content="later")
    mine = later.compiled_insert(connection.alias)
    assert [mine] == compiled_by_django(later, returning=True) and "RETURNING" in mine[0]
    kept = [entry for key, entry in models._COMPILED_INSERTS.items() if key[0] is TaskOutput]
    assert len(kept) == 1 and kept[0] is not None  # the later outputs took it


def test_a_database_that_cannot_return_the_id_saves_the_output(user: Any) -> None:
    task = services.submit_task(owner=user, actor=user, channel=Channel.API, title="outputs", handler="echo")
    services.claim(task.pk, worker_id="w1")
    with mock.patch.object(connection.features, "can_return_columns_from_insert", False):
        assert TaskOutput(task_id=task.pk, output_type="log", content="x").compiled_insert(connection.alias) is None
        if connection.vendor != "sqlite":  # psycopg has no last row id to fall back on: PostgreSQL always returns
            return
        output = services.record_output(task.pk, "log", "saved", attempt=1, worker_id="w1")
    assert TaskOutput.objects.get(pk=output.pk).content == "saved"
