"""Invariant 4: an acknowledged write is committed and on disk before the caller hears of it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tasks.models import Task
from tasks.selectors import verify_audit_chains
from tests.conftest import child_database_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_sqlite_runs_wal_with_full_sync_and_immediate_transactions():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite pragmas apply to the SQLite run")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 2  # FULL
        cursor.execute("PRAGMA foreign_keys")
        assert cursor.fetchone()[0] == 1
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert connection.settings_dict["ATOMIC_REQUESTS"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("synchronous_commit", "on"),  # an acknowledged commit is on disk
        ("fsync", "on"),
        ("random_page_cost", "1.1"),  # POSTGRES_RANDOM_PAGE_COST's default, on Crux's connections
    ],
)
def test_postgresql_commits_synchronously_and_plans_for_memory(setting, value):
    if connection.vendor != "postgresql":
        pytest.skip("applies to the PostgreSQL run")
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {setting}")
        assert cursor.fetchone()[0] == value


@pytest.mark.parametrize(
    ("cost", "url_options", "expected"),
    [
        ("", "", "-c random_page_cost=1.1"),
        ("2.5", "?options=-c%20statement_timeout%3D5000", "-c statement_timeout=5000 -c random_page_cost=2.5"),
        ("0", "?options=-c%20statement_timeout%3D5000", "-c statement_timeout=5000"),
        ("0", "", None),
    ],
)
def test_the_random_page_cost_joins_the_options_the_url_gives(cost, url_options, expected):
    """POSTGRES_RANDOM_PAGE_COST (1.1 unless set; 0: the server's own) is added to libpq's options, after any the
    DATABASE_URL gives; the settings are read in a process of their own, as a deployment reads its environment."""
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://crux@db.invalid:5432/crux{url_options}",
        "POSTGRES_RANDOM_PAGE_COST": cost,
    }
    if not cost:
        del env["POSTGRES_RANDOM_PAGE_COST"]
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from crux import settings; print(settings.DATABASES['default']['OPTIONS'].get('options'))",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == str(expected)


CHILD = """
import os, signal, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from tasks import services
from tasks.audit import Channel
owner = get_user_model().objects.get(username="alice")
for i in range(5):
    task = services.create_task(owner=owner, actor=owner, channel=Channel.API, title=f"acked {i}")
    services.transition(task.pk, "queued", actor="system:test", channel=Channel.SYSTEM, reason="q")
    print(task.pk, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_acknowledged_tasks_survive_the_process_being_killed(live_db, user):
    env = {**os.environ, "DATABASE_URL": child_database_url(), "DJANGO_SETTINGS_MODULE": "crux.settings"}
    child = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr
    acked = child.stdout.split()
    assert len(acked) == 5
    for task_id in acked:
        task = Task.objects.get(pk=task_id)
        assert task.state == "queued"
        assert [h.event for h in task.history.order_by("seq")] == ["created", "transition"]
    assert list(verify_audit_chains()) == []


def test_sqlite_writers_queue_on_a_kernel_lock_held_for_the_transaction(live_db):
    """A transaction holds an exclusive flock on <db>.writelock from its first statement to COMMIT
    (crux/db/base.py): the Python work before that statement runs without holding other writers up."""
    import fcntl

    from django.db import transaction

    if connection.vendor != "sqlite":
        pytest.skip("the write lock is the SQLite backend's")
    probe = os.open(f"{connection.settings_dict['NAME']}.writelock", os.O_RDWR | os.O_CREAT)

    def lock_is_free() -> bool:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe, fcntl.LOCK_UN)
        return True

    try:
        assert lock_is_free()
        with transaction.atomic():
            assert lock_is_free()
            assert not connection.connection.in_transaction
            Task.objects.exists()
            assert not lock_is_free()
            assert connection.connection.in_transaction
            with transaction.atomic():  # a savepoint keeps the same lock
                assert not lock_is_free()
        assert lock_is_free()
        assert not connection.connection.in_transaction
        with pytest.raises(RuntimeError), transaction.atomic():
            Task.objects.exists()
            assert not lock_is_free()
            raise RuntimeError("rolled back")
        assert lock_is_free()
        with transaction.atomic():  # a block that runs no statement never takes the lock
            assert lock_is_free()
        assert lock_is_free()
    finally:
        os.close(probe)


def test_a_sqlite_write_outside_a_transaction_queues_on_the_same_lock_and_a_read_does_not(live_db, user):
    """An UPDATE in autocommit (a lease renewal, say) waits for the writer holding the lock, as a transaction's first
    statement does, instead of meeting SQLite's own lock in its busy handler; a read never waits; the lock is free
    again once the write has run."""
    import fcntl
    import threading

    from django.db import connections

    if connection.vendor != "sqlite":
        pytest.skip("the write lock is the SQLite backend's")
    users = type(user).objects
    probe = os.open(f"{connection.settings_dict['NAME']}.writelock", os.O_RDWR | os.O_CREAT)
    done = threading.Event()
    seen: list[int] = []

    def write_alone() -> None:
        try:
            seen.append(users.filter(pk=user.pk).update(first_name="queued"))
            done.set()
        finally:
            connections.close_all()

    try:
        fcntl.flock(probe, fcntl.LOCK_EX)  # another writer holds the lock
        assert users.filter(pk=user.pk).exists()  # a read does not wait
        writer = threading.Thread(target=write_alone)
        writer.start()
        assert not done.wait(0.5), "the write ran while another writer held the lock"
        fcntl.flock(probe, fcntl.LOCK_UN)
        assert done.wait(10)
        writer.join(10)
        assert seen == [1] and users.get(pk=user.pk).first_name == "queued"
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the write ran
        fcntl.flock(probe, fcntl.LOCK_UN)
    finally:
        os.close(probe)


@pytest.mark.django_db
def test_sqlite_statements_are_converted_as_djangos_cursor_converts_them_then_kept():
    """crux.db keeps each statement's ``?`` form: the same text Django's cursor makes, ``%%`` and named styles too."""
    if connection.vendor != "sqlite":
        pytest.skip("the conversion is SQLite's cursor's")
    from django.db.backends.sqlite3.base import SQLiteCursorWrapper

    from crux.db.base import _qmark_style

    statements = ["SELECT %s, '%%s', '%%' || %s", "SELECT 1", "UPDATE t SET a = %s WHERE b = %s AND c LIKE '%%x'"]
    with connection.cursor() as cursor:
        mine = cursor.cursor  # the driver-level cursor of crux.db's class
        for sql in statements:
            django = SQLiteCursorWrapper.convert_query(mine, sql)
            assert mine.convert_query(sql) == mine.convert_query(sql) == django
        assert mine.convert_query("SELECT %(a)s", param_names=["a"]) == "SELECT :a"
        cursor.execute("SELECT %s || '%%'", ["50"])
        assert cursor.fetchone() == ("50%",)
    assert _qmark_style.cache_info().hits >= len(statements)
