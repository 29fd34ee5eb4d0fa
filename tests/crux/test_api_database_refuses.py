"""A database that refuses (down, disk full, locked) answers 503 JSON with Retry-After, and nothing is half-written.

Real faults, no mocks: SQLite's own "database or disk is full" (PRAGMA max_page_count on the request's
connection) and "database is locked" (another connection holding BEGIN EXCLUSIVE); PostgreSQL's lock timeout
(another connection holding a table lock while the submit's transaction needs it) and a full disk (the tables on
a tablespace of a 256 KB tmpfs: "No space left on device"); and, on both engines, a
database that cannot be reached at all. Requests run in autocommit, as in production (``live_db``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client

from tasks.models import Task, TaskHistory
from tests.api_support import client_for
from tests.conftest import free_port
from tests.crux.openapi_walk import OPERATIONS, request_schema, required_query, valid_body

pytest_plugins = ["tests.api_support"]

sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'")
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'")


def rows() -> tuple[int, int]:
    return Task.objects.count(), TaskHistory.objects.count()


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    assert "database" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0


@pytest.fixture
def api(live_db: Any, superuser: Any, settings: Any) -> Iterator[Any]:
    """A superuser's client: every operation gets past its permission checks to the database."""
    settings.API_RETRY_AFTER_SECONDS = 7
    client = client_for(superuser)
    assert client.get("/api/tasks/").status_code == 200  # the token is known, the connection open
    yield client
    connection.close()  # drop the session-level limits set on it


@pytest.fixture
def no_free_pages() -> Iterator[None]:
    """The file's free pages (left by the rows earlier tests deleted) taken by a table of this test's own: a write
    then needs the file to grow, which ``max_page_count`` refuses. Without it a submit fits in them, and succeeds."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA freelist_count")
        free = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_size")
        page = cursor.fetchone()[0]
        cursor.execute("CREATE TABLE disk_filler (b BLOB)")
        cursor.execute("INSERT INTO disk_filler VALUES (zeroblob(%s))", [(free + 8) * page])
        cursor.execute("PRAGMA freelist_count")
        assert cursor.fetchone()[0] == 0
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE disk_filler")


@sqlite_only
def test_a_full_disk_answers_503_and_writes_nothing(api: Any, no_free_pages: None) -> None:
    before = rows()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA page_count")
        cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0]}")
    response = api.post("/api/tasks/", {"title": "big", "payload": {"blob": "x" * 200_000}}, format="json")
    assert_unavailable(response)
    assert response["Retry-After"] == "7"
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA max_page_count = 1073741823")
    assert rows() == before
    assert (
        api.post("/api/tasks/", {"title": "big", "payload": {"blob": "x" * 200_000}}, format="json").status_code == 201
    )


@sqlite_only
def test_a_locked_database_answers_503_and_writes_nothing(api: Any) -> None:
    before = rows()
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 50")
        assert_unavailable(api.post("/api/tasks/", {"title": "locked out"}, format="json"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rows() == before
    assert api.post("/api/tasks/", {"title": "after the lock"}, format="json").status_code == 201


@postgres_only
def test_a_lock_timeout_mid_transaction_answers_503_and_writes_nothing(api: Any) -> None:
    """The submit inserts its task, then waits for the history table: the timeout rolls the task back too."""
    import psycopg

    conf = connection.settings_dict
    before = rows()
    with psycopg.connect(
        dbname=conf["NAME"], user=conf["USER"], host=conf["HOST"] or "127.0.0.1", port=conf["PORT"] or 5432
    ) as holder:
        holder.execute("LOCK TABLE tasks_taskhistory IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        assert_unavailable(api.post("/api/tasks/", {"title": "waits for history"}, format="json"))
        holder.rollback()
    assert rows() == before
    assert api.post("/api/tasks/", {"title": "after the lock"}, format="json").status_code == 201


@pytest.fixture
def tiny_tablespace(api: Any) -> Iterator[None]:
    """PostgreSQL's tables of tasks and history moved onto a file system with 256 KB more than they take: a disk
    that really fills up. They are compacted first: the row versions earlier tests rolled back are still in their
    files, which can outgrow any fixed size."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    tables = ("tasks_task", "tasks_taskhistory")
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (FULL) {', '.join(tables)}")
        cursor.execute("SELECT sum(pg_table_size(name::regclass)) FROM unnest(%s::text[]) AS name", [list(tables)])
        size_kb = int(cursor.fetchone()[0]) // 1024 + 256
    mountpoint = Path(tempfile.mkdtemp(prefix="crux-tiny-", dir="/tmp"))  # a path the postgres user can reach
    mountpoint.chmod(0o755)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mountpoint)], check=False)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        shutil.chown(mountpoint, "postgres", "postgres")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLESPACE crux_test_tiny LOCATION '{mountpoint}'")
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} SET TABLESPACE crux_test_tiny")
        yield
    finally:
        connection.close()
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
            cursor.execute("DROP TABLESPACE IF EXISTS crux_test_tiny")
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()


@postgres_only
def test_a_full_disk_on_postgresql_answers_503_and_writes_nothing(api: Any, tiny_tablespace: None) -> None:
    before = rows()
    answers = []
    for i in range(20):  # each payload is incompressible and about 150 KB: the file system fills within a few
        blob = os.urandom(75_000).hex()
        response = api.post("/api/tasks/", {"title": f"fills the disk {i}", "payload": {"blob": blob}}, format="json")
        answers.append(response.status_code)
        if response.status_code != 201:
            break
    assert answers[0] == 201 and answers[-1] == 503, answers  # it wrote until the file system was full
    assert_unavailable(response)
    written = answers.count(201)
    assert rows() == (before[0] + written, before[1] + written), "a refused submit left no task and no history row"
    assert Task.objects.filter(title=f"fills the disk {len(answers) - 1}").count() == 0


@pytest.fixture
def database_down(api: Any) -> Iterator[None]:
    """The database cannot be reached: a file in a missing directory (SQLite), a closed port (PostgreSQL)."""
    conf = connection.settings_dict
    saved = dict(conf)
    connection.close()
    if connection.vendor == "sqlite":
        conf["NAME"] = "/nonexistent-crux-dir/db.sqlite3"
    else:
        conf["PORT"] = free_port()
    try:
        yield
    finally:
        connection.close()
        conf.update(saved)


def test_every_endpoint_answers_503_json_when_the_database_is_down(api: Any, database_down: None) -> None:
    task_id = "00000000-0000-4000-8000-000000000000"
    for path, method, operation in OPERATIONS:
        if path in ("/api/", "/api/handlers"):
            continue  # links, or the handlers of settings: no query (and the token's user is cached in Redis)
        url = path.replace("{task_id}", task_id).replace("{job_id}", task_id)
        schema = request_schema(operation)
        body = json.dumps(valid_body(schema) if schema else {}).encode()
        query = urlencode(required_query(operation))
        response = api.generic(method.upper(), f"{url}?{query}", body, content_type="application/json")
        if path.endswith("/events"):  # the redirect to the stream process reads nothing: it still answers
            assert (response.status_code, response["Content-Type"]) == (307, "application/json"), response.content
            assert response.json()["stream_url"].endswith(f"{url}?{query}".rstrip("?"))
            continue
        assert_unavailable(response)


def test_a_failure_outside_the_api_views_answers_503_json(api: Any, database_down: None) -> None:
    """The login form is a Django view (no DRF exception handler): handler500 answers, in JSON."""
    client = Client(raise_request_exception=False)
    assert_unavailable(client.post("/api/auth/login/", {"username": "root", "password": "pw-root-123"}))
    client.cookies["sessionid"] = "a-session-key"
    assert_unavailable(client.get("/api/tasks/persistent/"))
