"""What a task's ids, chain head and history choices take in the database, and that every way of reading them still
finds them.

Task ids are 16 bytes on both engines (``tasks.models.CompactUUIDField``: a BLOB on SQLite, ``uuid`` on PostgreSQL),
in the task's row and in every row that refers to it; the chain head is 32 bytes, as the history rows' links are. A
history row's event, states and channel are one character on both engines, a task's state on SQLite
(``tasks.models.CodedChoiceField``).
"""

from __future__ import annotations

import importlib
import uuid

import pytest
from django.apps import apps
from django.db import connection
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.loader import MigrationLoader
from django.db.models import Q
from django.test import override_settings
from django.urls import reverse

from persistence import mirror
from tasks import db_triggers, services
from tasks.admin.lists import id_prefix_q
from tasks.audit import SYSTEM_ACTORS, WORKER_ACTOR, Channel
from tasks.models import CodedChoiceField, HistoryPurgeGrant, KeyOrderIndex, Task, TaskHistory, TaskOutput
from tasks.selectors import count_history_by_kind, task_outputs, verify_audit_chains
from tests.api_support import client_for

pytestmark = pytest.mark.django_db

# (table, column) of a task id; each holds the task's.
TASK_ID_COLUMNS = [
    ("tasks_task", "id"),
    ("tasks_taskhistory", "task_id"),
    ("tasks_taskoutput", "task_id"),
    ("tasks_idempotencykey", "task_id"),
]


def stored(table: str, column: str, where: str, value: object) -> list[tuple[str, int]]:
    """(type, bytes) of ``column`` in the rows of ``table`` where ``where`` is ``value``, as the database holds them
    (PostgreSQL: the value's size on disk, a varlena's header byte included)."""
    if connection.vendor == "sqlite":
        sql = f"SELECT typeof({column}), length({column}) FROM {table} WHERE {where} = %s"
    else:
        sql = f"SELECT pg_typeof({column})::text, pg_column_size({column}) FROM {table} WHERE {where} = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [value])
        return cursor.fetchall()


def submitted(user):
    task, _ = services.submit_task_once(
        owner=user, actor=user, channel=Channel.API, title="stored compactly", idempotency_key="compact-1"
    )
    services.add_output(task.pk, output_type="stdout", content="a line")
    return Task.objects.get(pk=task.pk)


def test_a_task_id_is_16_bytes_wherever_it_is_stored_and_the_chain_head_32(user):
    task = submitted(user)
    key = Task._meta.pk.get_db_prep_value(task.pk, connection)
    expected = ("blob", 16) if connection.vendor == "sqlite" else ("uuid", 16)
    for table, column in TASK_ID_COLUMNS:
        rows = stored(table, column, column, key)
        assert rows and set(rows) == {expected}, (table, rows)
    head = [("blob", 32)] if connection.vendor == "sqlite" else [("bytea", 33)]
    assert stored("tasks_task", "history_head", "id", key) == head
    assert len(task.history_head) == 64 and task.history_head == task.history.latest("seq").hash


def test_every_read_finds_a_task_by_its_id(user):
    task = submitted(user)
    assert Task.objects.get(pk=str(task.pk)) == task
    assert list(Task.objects.filter(pk__in=[task.pk, uuid.uuid4()])) == [task]
    assert Task.objects.filter(id_prefix_q(str(task.pk)[:8])).get() == task, "a short id is a range of ids"
    assert TaskHistory.objects.filter(task_id=task.pk).count() == task.history_count
    assert [o.content for o in task_outputs(task.pk)] == ["a line"]
    assert list(TaskOutput.objects.filter(task=task).values_list("task_id", flat=True)) == [task.pk]
    assert Task.objects.filter(idempotency_key__key="compact-1").get() == task
    rows = [row for batch in mirror.raw_rows(Task.objects.values_list(*mirror.MIRRORED_FIELDS), 10) for row in batch]
    assert mirror.batch_of_rows(rows).ids == [str(task.pk)], "the mirror's raw read names the task as the ORM does"
    assert list(verify_audit_chains()) == []


def test_a_purge_grant_names_the_task_as_its_history_rows_do(user):
    """The history DELETE trigger compares the grant's task id with the rows' and checks the grant's MAC over it."""
    task = submitted(user)
    key = Task._meta.pk.get_db_prep_value(task.pk, connection)
    grant = services.removal._signed_grant(task.pk)
    grant.save()
    assert stored("tasks_historypurgegrant", "task_id", "task_id", key) == stored("tasks_task", "id", "id", key)
    db_triggers.admit_purge(connection)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tasks_taskhistory WHERE task_id = %s", [key])
    assert not TaskHistory.objects.filter(task=task).exists()
    assert HistoryPurgeGrant.objects.filter(task_id=task.pk).get().mac == grant.mac


def test_sqlite_reads_an_id_still_held_as_hex_digits(user):
    """Rows written before migration 0019 (which rewrites every one) read back as the same task ids."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's uuid has one form")
    task = submitted(user)
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        for table, column in TASK_ID_COLUMNS:
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {column} = %s", [task.pk.hex, task.pk.bytes])
    db_triggers.install(connection)
    assert stored("tasks_taskoutput", "task_id", "task_id", task.pk.hex) == [("text", 32)]
    assert Task.objects.values_list("pk", flat=True).get() == task.pk
    assert TaskOutput.objects.values_list("task_id", flat=True).get() == task.pk


CODED = [TaskHistory._meta.get_field(name) for name in ("event", "state_from", "state_to", "channel")]


def test_a_history_rows_choices_are_one_character_on_both_engines(user):
    task = submitted(user)
    columns = ", ".join(f"{f.column}, length({f.column})" for f in CODED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM tasks_taskhistory WHERE task_id = %s",
            [Task._meta.pk.get_db_prep_value(task.pk, connection)],
        )
        [stored_row] = cursor.fetchall()
    created = task.history.get()
    names = [getattr(created, f.attname) for f in CODED]
    assert names == ["created", "", "queued", "api"]
    assert stored_row == ("0", 1, "", 0, "1", 1, "0", 1), "each name's position in its field's codes"
    assert all(f.coded_on == ("sqlite", "postgresql") for f in CODED)


def test_a_coded_choice_keeps_its_name_on_an_engine_it_does_not_code_on():
    """A task's state is coded on SQLite only (``coded_on``'s default): PostgreSQL's partial indexes and raw reads
    name it."""
    field = Task._meta.get_field("state")
    assert field.coded_on == ("sqlite",)
    assert field.get_db_prep_value("queued", connection) == ("5" if connection.vendor == "sqlite" else "queued")
    assert "coded_on" not in field.deconstruct()[3], "the default stays out of migrations"
    assert TaskHistory._meta.get_field("event").deconstruct()[3]["coded_on"] == ("sqlite", "postgresql")


def raw_history_choices(task) -> list[tuple[str, ...]]:
    columns = ", ".join(f.column for f in CODED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM tasks_taskhistory WHERE task_id = %s ORDER BY seq",
            [Task._meta.pk.get_db_prep_value(task.pk, connection)],
        )
        return cursor.fetchall()


def test_migration_0025_codes_postgresql_history_rows_in_place_and_back(user):
    """PostgreSQL rows written before migration 0025 hold the names: the migration rewrites them to codes (and its
    reverse back), with the append-only triggers in place again after; reads and the chain are the same either
    way. SQLite's rows hold codes since 0022: there it does nothing."""
    migration = importlib.import_module("tasks.migrations.0025_history_choices_as_codes_on_postgresql")
    task = submitted(user)
    services.cancel(task.pk, actor=user, channel=Channel.ADMIN, reason="coded")
    codes = [("0", "", "1", "0"), ("1", "1", "5", "1")]
    names = [("created", "", "queued", "api"), ("transition", "queued", "cancelled", "admin")]
    assert raw_history_choices(task) == codes

    migration.to_names(apps, connection.schema_editor())
    assert raw_history_choices(task) == (names if connection.vendor == "postgresql" else codes)
    assert list(TaskHistory.objects.filter(task=task).order_by("seq").values_list(*[f.name for f in CODED])) == names
    assert list(verify_audit_chains()) == []

    migration.to_codes(apps, connection.schema_editor())
    assert raw_history_choices(task) == codes
    assert db_triggers.installed_history_triggers(connection) == set(db_triggers.HISTORY_TRIGGERS)
    assert list(verify_audit_chains()) == []


def test_an_outputs_type_is_one_character_on_both_engines_and_reads_as_its_name(user):
    task = submitted(user)
    services.add_output(task.pk, output_type="artifact", content="a file")
    key = Task._meta.pk.get_db_prep_value(task.pk, connection)
    kind = "text" if connection.vendor == "sqlite" else "character varying"
    assert stored("tasks_taskoutput", "output_type", "task_id", key) == [(kind, 1 if kind == "text" else 2)] * 2
    outputs = TaskOutput.objects.filter(task=task)
    assert list(outputs.order_by("pk").values_list("output_type", flat=True)) == ["stdout", "artifact"]
    assert outputs.get(output_type="artifact").content == "a file"
    assert outputs.filter(output_type__in=["log", "stdout"]).get().content == "a line"
    response = client_for(user).get(f"/api/tasks/outputs/{task.pk}")
    assert [r["output_type"] for r in response.json()["results"]] == ["stdout", "artifact"]

    migration = importlib.import_module("tasks.migrations.0026_output_type_as_code")
    migration.to_names(apps, connection.schema_editor())
    assert stored("tasks_taskoutput", "output_type", "task_id", key)[0][1] == len("stdout") + (kind != "text")
    assert list(outputs.order_by("pk").values_list("output_type", flat=True)) == ["stdout", "artifact"]
    migration.to_codes(apps, connection.schema_editor())
    assert [size for _, size in stored("tasks_taskoutput", "output_type", "task_id", key)] == [1 + (kind != "text")] * 2


def test_the_workers_actor_is_one_character_and_a_users_name_is_kept(user, admin_client):
    """A history row's actor holds a system component of ``SYSTEM_ACTORS`` as its code (a control character, on
    both engines), a user's name as it is; reads, filters, the admin's search and the chain speak names."""
    task = submitted(user)
    services.claim(task.pk, worker_id="w1")
    rows = TaskHistory.objects.filter(task=task).order_by("seq")
    assert list(rows.values_list("actor", flat=True)) == [user.username, WORKER_ACTOR]
    assert stored_actors(task) == [user.username, chr(1 + SYSTEM_ACTORS.index(WORKER_ACTOR))]
    assert rows.get(actor=WORKER_ACTOR).seq == 2
    assert rows.filter(actor__in=[WORKER_ACTOR, user.username]).count() == 2
    assert list(rows.filter(actor__icontains="Worker").values_list("seq", flat=True)) == [2], "a coded name's part"
    assert list(rows.filter(actor__icontains=user.username[1:]).values_list("seq", flat=True)) == [1]
    assert not rows.filter(actor__icontains="nobody").exists()
    response = client_for(user).get(f"/api/tasks/history/{task.pk}")
    assert [r["actor"] for r in response.json()["results"]] == [user.username, WORKER_ACTOR]
    assert list(verify_audit_chains()) == []

    def searched(term: str) -> list[int]:
        page = admin_client.get(reverse("admin:tasks_taskhistory_changelist"), {"q": term})
        assert page.status_code == 200
        return sorted(row.seq for row in page.context["cl"].result_list if row.task_id == task.pk)

    assert searched("WORKER") == [2], "a coded name is found by any part of it, in any case"
    assert searched("system:") == [2]
    assert searched(user.username[1:]) == [1]
    assert searched("submitted") == [1], "the other searched field still counts"
    searched("\x01")  # a control character typed as a term is answered (200), never an error


def test_an_actor_that_would_read_back_as_a_code_is_refused_and_nothing_written(user):
    task = submitted(user)
    for actor in (chr(1), chr(3)):
        with pytest.raises(ValueError, match="would read back as a code"):
            services.transition(task.pk, "cancelled", actor=actor, channel=Channel.API, reason="x")
    assert Task.objects.get(pk=task.pk).state == "queued"
    assert TaskHistory.objects.filter(task=task).count() == 1


def test_migration_0027_codes_system_actors_in_place_and_back(user):
    migration = importlib.import_module("tasks.migrations.0027_system_actors_as_codes")
    task = submitted(user)
    services.claim(task.pk, worker_id="w1")
    migration.to_names(apps, connection.schema_editor())
    assert stored_actors(task) == [user.username, WORKER_ACTOR]
    assert list(TaskHistory.objects.filter(task=task).order_by("seq").values_list("actor", flat=True)) == [
        user.username,
        WORKER_ACTOR,
    ]
    assert list(verify_audit_chains()) == []
    migration.to_codes(apps, connection.schema_editor())
    assert stored_actors(task) == [user.username, "\x01"]
    assert db_triggers.installed_history_triggers(connection) == set(db_triggers.HISTORY_TRIGGERS)
    assert list(verify_audit_chains()) == []


def stored_actors(task) -> list[str]:
    """The actors of ``task``'s history rows as the database holds them, in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT actor FROM tasks_taskhistory WHERE task_id = %s ORDER BY seq",
            [Task._meta.pk.get_db_prep_value(task.pk, connection)],
        )
        return [actor for (actor,) in cursor.fetchall()]


def test_every_read_and_filter_of_a_coded_choice_speaks_names(user):
    task = submitted(user)
    services.cancel(task.pk, actor=user, channel=Channel.ADMIN, reason="coded")
    rows = TaskHistory.objects.filter(task=task)
    assert list(rows.order_by("seq").values_list("event", "state_from", "state_to", "channel")) == [
        ("created", "", "queued", "api"),
        ("transition", "queued", "cancelled", "admin"),
    ]
    assert rows.filter(event="transition", state_to__in=["cancelled", "failed"], channel="admin").count() == 1
    assert rows.filter(state_from="").get().seq == 1
    assert rows.exclude(channel="api").get().seq == 2
    kinds = {(k["event"], k["state_from"], k["state_to"], k["channel"]): k["n"] for k in count_history_by_kind()}
    assert kinds == {("created", "", "queued", "api"): 1, ("transition", "queued", "cancelled", "admin"): 1}
    response = client_for(user).get(f"/api/tasks/history/{task.pk}")
    assert [(r["event"], r["state_to"], r["channel"]) for r in response.json()["results"]] == [
        ("created", "queued", "api"),
        ("transition", "cancelled", "admin"),
    ]
    assert list(verify_audit_chains()) == []


def test_every_choice_has_a_code_and_codes_only_grow():
    """A code is what stored rows mean: the codes a migration recorded stay first, in their order."""
    recorded = MigrationLoader(None, ignore_no_migrations=True).project_state().apps
    for model in (TaskHistory, Task, TaskOutput):
        for field in [f for f in model._meta.concrete_fields if isinstance(f, CodedChoiceField)]:
            assert {value for value, _ in field.choices or ()} - {""} <= set(field.codes), field.name
            assert len(set(field.codes)) == len(field.codes), field.name
            before = recorded.get_model("tasks", model.__name__)._meta.get_field(field.name).codes
            assert field.codes[: len(before)] == before, field.name


def test_a_tasks_state_is_one_character_on_sqlite_and_orders_as_its_name_on_both_engines(user):
    field = Task._meta.get_field("state")
    assert list(field.codes) == sorted(field.codes), "ordering by state would differ between the engines"
    task = submitted(user)
    cancelled = services.submit_task(owner=user, actor=user, channel=Channel.API, title="to cancel")
    services.cancel(cancelled.pk, actor=user, channel=Channel.ADMIN, reason="coded state")
    assert stored("tasks_task", "state", "id", Task._meta.pk.get_db_prep_value(task.pk, connection)) == (
        [("text", 1)] if connection.vendor == "sqlite" else [("character varying", len("queued") + 1)]
    )
    assert list(Task.objects.order_by("state").values_list("state", flat=True)) == ["cancelled", "queued"]
    assert list(Task.objects.order_by("-state").values_list("state", flat=True)) == ["queued", "cancelled"]
    assert Task.objects.filter(state__in=["cancelled", "failed"]).get().pk == cancelled.pk
    assert Task.objects.exclude(state="queued").get().pk == cancelled.pk
    assert Task.objects.get(pk=task.pk).state == "queued"
    tasks = Task.objects.order_by("pk")
    rows = [row for batch in mirror.raw_rows(tasks.values_list(*mirror.MIRRORED_FIELDS), 10) for row in batch]
    with override_settings(MIRROR_TERMINAL_TTL=60):
        raw, orm = mirror.batch_of_rows(rows), mirror.batch_of_docs(mirror.snapshot_of(t) for t in tasks)
    assert (raw.payloads, raw.expiring) == (orm.payloads, orm.expiring), "the mirror's raw read names the state"
    assert sorted(raw.expiring) == ["0", "1"]


@pytest.mark.parametrize("value", ["carrier-pigeon", "x", ""])
def test_a_value_with_no_code_is_stored_as_its_text(value):
    field = TaskHistory._meta.get_field("channel")
    stored_value = field.get_db_prep_value(value, connection)
    assert stored_value == value
    assert field.from_db_value(stored_value, None, connection) == value


def index_columns(table: str, name: str) -> list[str]:
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, table)[name]["columns"]


def test_the_output_index_holds_the_id_only_where_an_entry_does_not_end_with_it_already(user):
    """On SQLite every index entry ends with the rowid, which a task output's id is: the index leaves it out."""
    expected = ["task_id"] if connection.vendor == "sqlite" else ["task_id", "id"]
    assert index_columns("tasks_taskoutput", "output_task_order") == expected


def test_a_tasks_outputs_are_read_in_id_order_through_the_index_with_no_sort(user):
    task = submitted(user)
    for line in ("second", "third"):
        services.add_output(task.pk, output_type="stdout", content=line)
    other = services.submit_task(owner=user, actor=user, channel=Channel.API, title="other")
    services.add_output(other.pk, output_type="stdout", content="not this task's")
    assert [out.content for out in task_outputs(task.pk)] == ["a line", "second", "third"]
    newest_first = TaskOutput.objects.filter(task_id=task.pk).order_by("-id")
    assert [out.content for out in newest_first] == ["third", "second", "a line"]
    if connection.vendor == "sqlite":
        for query in (task_outputs(task.pk), newest_first):
            sql, params = query.query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                plan = " ".join(row[-1] for row in cursor.fetchall())
            assert "output_task_order" in plan and "TEMP B-TREE" not in plan, plan


def test_a_key_order_index_keeps_its_condition_where_it_leaves_the_key_out():
    index = KeyOrderIndex(fields=["task", "id"], name="log_order", condition=Q(output_type="log"))
    sql = str(index.create_sql(TaskOutput, connection.SchemaEditorClass(connection)))
    assert "WHERE" in sql and "log" in sql, sql
    assert ('"id"' in sql) == (connection.vendor != "sqlite"), sql


def test_a_key_order_index_must_end_with_the_primary_key():
    index = KeyOrderIndex(fields=["task", "created_at"], name="not_by_key")
    with pytest.raises(ValueError, match="primary key"):
        index.create_sql(TaskOutput, BaseDatabaseSchemaEditor(connection))
