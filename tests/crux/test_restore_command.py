"""`restore FILE` into a database that was never migrated: one clear line and exit status 1, no traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from persistence.backup import backup
from tests.conftest import RUN_PREFIX, child_database_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of this test's own, on the engine the suite runs on; its URL."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    server = child_database_url().rsplit("/", 1)[0]
    name = f"crux_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tables(url: str) -> list[str]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_restore_into_an_unmigrated_database_says_so_in_one_line(settings, tmp_path, make_task, empty_database):
    settings.BACKUP_DIR = tmp_path / "backups"
    make_task(title="to be restored")
    written = backup("json")
    env = {**os.environ, "DATABASE_URL": empty_database, "REDIS_KEY_PREFIX": RUN_PREFIX}
    done = subprocess.run(
        [sys.executable, "manage.py", "restore", str(written.path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]  # app start-up log lines aside
    assert len(errors) == 1, done.stderr
    assert "not migrated" in errors[0] and "python manage.py migrate" in errors[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert tables(empty_database) == [], "a refused restore writes nothing"
