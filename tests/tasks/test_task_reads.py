"""A task read by primary key (``tasks.models.read_task``) with SQL compiled once per connection: what every write of
a service reads first. It must give what Django's ORM reads, field for field, lock as ``select_for_update`` locks,
and refuse what it refuses. And rows loaded without ``Model.__init__`` (``tasks.models.LoadedDirectly``): what
Django's own loading gives them."""

from __future__ import annotations

import threading
import uuid
from typing import Any
from unittest import mock

import pytest
from django.db import connection, connections, transaction
from django.db.models import F, Model
from django.db.models.signals import post_init
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from tasks import selectors, services
from tasks.audit import Channel
from tasks.exceptions import TaskNotFound
from tasks.models import Task, TaskHistory, TaskOutput, read_task
from tasks.services.base import locked_task, unlocked_task

pytest_plugins = ["tests.api_support"]


def fields_of(task: Task) -> dict[str, tuple[type, Any]]:
    return {f.attname: (type(v := getattr(task, f.attname)), v) for f in Task._meta.concrete_fields}


@pytest.fixture
def tasks(task_in: Any) -> list[Task]:
    """Tasks whose rows hold every kind of value: JSON objects, times set and unset, an edited one, a deleted one."""
    done = task_in("completed", metadata={"team": "\u00e9quipe", "n": [1, 2.5, None]}, acceptance_criteria={"a": True})
    services.update_task(done.pk, actor=done.owner, channel=Channel.API, reason="test", description="described")
    return [task_in("pending"), task_in("running"), Task.objects.get(pk=done.pk), task_in("failed", deleted=True)]


@pytest.mark.django_db
@pytest.mark.parametrize("lock", [False, True], ids=["unlocked", "locked"])
def test_a_read_gives_what_django_reads_field_for_field(tasks: list[Task], lock: bool) -> None:
    with transaction.atomic():
        for task in tasks:
            django_s = (Task.objects.select_for_update() if lock else Task.objects).get(pk=task.pk)
            ours = read_task(task.pk, "default", lock=lock)
            assert ours is not None and fields_of(ours) == fields_of(django_s)
            assert (ours._state.adding, ours._state.db) == (False, "default")


@pytest.mark.django_db
def test_a_task_that_is_not_there_reads_as_none_and_the_services_refuse_it(tasks: list[Task]) -> None:
    absent = uuid.uuid4()
    assert read_task(absent, "default") is None
    with pytest.raises(TaskNotFound):
        unlocked_task(absent)
    with transaction.atomic(), pytest.raises(TaskNotFound):
        locked_task(absent)


@pytest.mark.django_db
def test_after_the_first_read_a_read_compiles_nothing_and_runs_one_statement(tasks: list[Task]) -> None:
    read_task(tasks[0].pk, "default")
    with mock.patch.object(SQLCompiler, "as_sql", autospec=True, side_effect=SQLCompiler.as_sql) as compiles:
        with CaptureQueriesContext(connection) as queries:
            for task in tasks:
                assert read_task(task.pk, "default").pk == task.pk
    assert compiles.call_count == 0
    assert len(queries) == len(tasks)


@pytest.mark.usefixtures("live_db")
def test_a_locked_read_outside_a_transaction_is_refused_as_django_refuses_it(tasks: list[Task]) -> None:
    """PostgreSQL: ``select_for_update`` outside a transaction is a TransactionManagementError, from the first read
    and every later one, the read compiled in a transaction before included; SQLite has no row locks (its writers
    take the database's lock), and Django reads."""
    pk = tasks[0].pk
    refused = connection.features.has_select_for_update
    with transaction.atomic():
        assert read_task(pk, "default", lock=True).pk == pk
    for _ in range(2):
        for read in (
            lambda: Task.objects.select_for_update().filter(pk=pk).first(),
            lambda: read_task(pk, "default", lock=True),
        ):
            if refused:
                with pytest.raises(TransactionManagementError):
                    read()
            else:
                assert read().pk == pk


@pytest.mark.usefixtures("live_db")
@pytest.mark.skipif(not connection.features.has_select_for_update_nowait, reason="no row locks on this engine")
def test_a_locked_read_holds_the_row_until_its_transaction_ends(tasks: list[Task]) -> None:
    pk = tasks[0].pk
    outcomes: list[str] = []

    def try_lock() -> None:
        try:
            with transaction.atomic():
                Task.objects.select_for_update(nowait=True).filter(pk=pk).first()
            outcomes.append("locked")
        except Exception as exc:  # the engine's "could not obtain lock", whatever its class
            outcomes.append(type(exc).__name__)
        finally:
            connections.close_all()

    with transaction.atomic():
        assert read_task(pk, "default", lock=True).pk == pk
        other = threading.Thread(target=try_lock)
        other.start()
        other.join(10)
    after = threading.Thread(target=try_lock)
    after.start()
    after.join(10)
    assert outcomes[0] != "locked" and outcomes[1] == "locked", outcomes


@pytest.mark.usefixtures("live_db")
def test_a_read_after_the_connection_closed_opens_a_new_one(tasks: list[Task]) -> None:
    """The compiled read outlives the database connection it was compiled on (CONN_MAX_AGE, a server restart)."""
    assert read_task(tasks[0].pk, "default").pk == tasks[0].pk
    connection.close()
    assert connection.connection is None
    assert fields_of(read_task(tasks[2].pk, "default")) == fields_of(Task.objects.get(pk=tasks[2].pk))


@pytest.mark.usefixtures("live_db")
def test_each_thread_reads_through_its_own_connection(tasks: list[Task]) -> None:
    read_task(tasks[0].pk, "default")
    seen: list[Any] = []

    def read() -> None:
        try:
            seen.append((connections["default"] is not connection, fields_of(read_task(tasks[2].pk, "default"))))
        finally:
            connections.close_all()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(10)
    assert seen == [(True, fields_of(Task.objects.get(pk=tasks[2].pk)))]


def _attributes(instance: Model) -> dict[str, Any]:
    """Every attribute an instance holds (its values, annotations, cached relations) and its state."""
    values = {name: value for name, value in vars(instance).items() if name != "_state"}
    return {**values, "_state": (type(instance._state), instance._state.adding, instance._state.db)}


@pytest.mark.django_db
def test_rows_loaded_directly_hold_what_django_s_own_loading_gives(tasks: list[Task]) -> None:
    """``LoadedDirectly.from_db`` skips ``Model.__init__``: each task, history and output row it loads (a list's
    page with its users' names, ``read_task``) holds the attributes and state that Django's own ``from_db`` gives
    an instance made from the row's values as ``values_list`` reads them (no instance made)."""
    running = tasks[1]
    services.record_output(running.pk, "stdout", "a line", attempt=running.attempt_count, worker_id=running.worker_id)
    reads: list[tuple[type[Model], list[Model]]] = [
        (Task, list(Task.objects.annotate(owner_username=F("owner__username")))),
        (Task, [read_task(task.pk, "default") for task in tasks]),
        (TaskHistory, list(TaskHistory.objects.all())),
        (TaskOutput, list(TaskOutput.objects.all())),
    ]
    with mock.patch.object(Model, "__init__", autospec=True, side_effect=Model.__init__) as init:
        for model, rows in reads:
            names = [field.attname for field in model._meta.concrete_fields]
            stored = {values[0]: values for values in model.objects.values_list(*names)}
            assert rows and len(stored) >= len(rows)
            for row in rows:
                assert type(row) is model
                init.reset_mock()
                django_s = Model.from_db.__func__(model, "default", names, stored[row.pk])  # type: ignore[attr-defined]
                assert init.call_count == 1, "Django's own path"
                if "owner_username" in vars(row):  # the queryset's annotation, set after loading
                    django_s.owner_username = row.owner_username
                assert _attributes(row) == _attributes(django_s)
                assert row._state.adding is False and row._state.db == "default"
        init.reset_mock()
        page = list(selectors.task_list(tasks[0].owner))
        made = [type(call.args[0]) for call in init.call_args_list]
        assert page and Task not in made, "a page of tasks is loaded without Model.__init__"
    assert [task.owner.username for task in page] == [tasks[0].owner.username] * len(page)


@pytest.mark.django_db
def test_a_row_with_deferred_fields_or_a_model_init_receiver_takes_django_s_own_path(tasks: list[Task]) -> None:
    [partial] = Task.objects.filter(pk=tasks[2].pk).only("title")
    assert partial.get_deferred_fields() and partial.title == tasks[2].title
    assert partial.description == tasks[2].description  # read when asked, as Django does
    seen: list[Task] = []

    def receiver(sender: type[Model], instance: Model, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=Task)
    try:
        loaded = Task.objects.get(pk=tasks[2].pk)
    finally:
        post_init.disconnect(receiver, sender=Task)
    assert seen == [loaded]
    with mock.patch.object(Model, "__init__", autospec=True, side_effect=Model.__init__) as init:
        assert Task.objects.get(pk=tasks[2].pk).pk == loaded.pk
    assert Task not in [type(call.args[0]) for call in init.call_args_list], "no receiver left: loaded directly"
