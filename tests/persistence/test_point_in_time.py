"""Point-in-time recovery on PostgreSQL with pgBackRest, on a private cluster of the test's own.

The cluster archives its WAL continuously (``archive_command`` = ``pgbackrest archive-push``); a full backup is
taken after Crux's migrations; two tasks are submitted through Crux's own service, a second apart; the cluster
is stopped and restored to a time between the two. The first task is there with its history, the second is not:
what README's "Point-in-time recovery" promises; and ``verify_audit`` names the second as lost (the Redis mirror
saw it), so an operator knows what the recovery point cost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
STANZA = "crux"
pytestmark = pytest.mark.slow

SUBMIT = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from tasks import services
from tasks.audit import Channel
owner, _ = get_user_model().objects.get_or_create(username="pitr")
task = services.submit_task(owner=owner, actor=owner, channel=Channel.API, title=sys.argv[1])
print(json.dumps(str(task.pk)))
"""


def as_postgres(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """PostgreSQL's tools refuse to run as root: run them as the postgres user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


class Cluster:
    """A PostgreSQL cluster archiving its WAL to a pgBackRest repository, both in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.data, self.repo, self.run = root / "data", root / "repo", root / "run"
        self.config = root / "pgbackrest.conf"
        for directory in (self.repo, self.run, root / "log"):
            directory.mkdir()
        self.config.write_text(
            f"[global]\nrepo1-path={self.repo}\nlog-path={root / 'log'}\nlock-path={self.run}\n"
            "log-level-console=warn\nlog-level-file=off\nstart-fast=y\n"
            f"[{STANZA}]\npg1-path={self.data}\npg1-port={self.port}\npg1-socket-path={self.run}\n"
        )
        shutil.chown(root, "postgres")
        for path in root.iterdir():
            shutil.chown(path, "postgres")
        as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.run}'\n"
                "wal_level = replica\narchive_mode = on\n"
                f"archive_command = 'pgbackrest --config={self.config} --stanza={STANZA} archive-push %p'\n"
                "archive_timeout = 60\nmax_wal_senders = 0\nfsync = off\n"
            )

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/crux"

    def pgbackrest(self, *args: str) -> None:
        as_postgres("pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *args)

    def start(self) -> None:
        as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log" / "server.log"), "-w", "start")

    def stop(self) -> None:
        as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def query(self, sql: str, database: str = "crux") -> list[tuple]:
        with psycopg.connect(self.url.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def manage(self, *args: str, script: str | None = None, expect: int = 0) -> str:
        env = {**os.environ, "DATABASE_URL": self.url, "DJANGO_SETTINGS_MODULE": "crux.settings"}
        command = [sys.executable, "-c", script, *args] if script else [sys.executable, "manage.py", *args]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == expect, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's WAL archiving: this test runs in the PostgreSQL suite")
    for tool in ("pgbackrest", "initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make test installs pgbackrest; initdb comes with PostgreSQL)")
    # Not under pytest's temporary root: the postgres user must reach the directory (that root is private).
    root = Path(tempfile.mkdtemp(prefix="crux-pitr-"))
    try:
        cluster = Cluster(root)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wal_archived(cluster: Cluster) -> None:
    """Switch to a new WAL segment and wait until the finished one is in the repository."""
    (segment,) = cluster.query("SELECT pg_walfile_name(pg_switch_wal())")[0]
    deadline = time.monotonic() + 60
    while cluster.query("SELECT last_archived_wal FROM pg_stat_archiver")[0][0] != segment:
        assert time.monotonic() < deadline, "the WAL segment was not archived within 60 s"
        time.sleep(0.2)


def test_recovery_to_a_time_between_two_submits_keeps_the_first_and_not_the_second(cluster: Cluster) -> None:
    cluster.query("CREATE DATABASE crux", database="postgres")
    cluster.pgbackrest("stanza-create")
    cluster.manage("migrate", "--noinput")
    cluster.pgbackrest("backup", "--type=full")

    first = json.loads(cluster.manage("first, before the target", script=SUBMIT))
    time.sleep(1)
    (target,) = cluster.query("SELECT now()::text")[0]
    time.sleep(1)
    second = json.loads(cluster.manage("second, after the target", script=SUBMIT))
    wal_archived(cluster)

    cluster.stop()
    cluster.pgbackrest("restore", "--delta", "--type=time", f"--target={target}", "--target-action=promote")
    cluster.start()
    deadline = time.monotonic() + 60
    while cluster.query("SELECT pg_is_in_recovery()")[0][0]:
        assert time.monotonic() < deadline, "recovery did not finish within 60 s"
        time.sleep(0.2)

    titles = dict(cluster.query("SELECT id::text, title FROM tasks_task"))
    assert titles == {first: "first, before the target"}, titles
    assert second not in titles
    history = cluster.query(f"SELECT count(*) FROM tasks_taskhistory WHERE task_id = '{first}'")[0][0]
    assert history == 1
    # The audit says what the recovery point cost: the mirror saw the second task, which SQL no longer has.
    report = cluster.manage("verify_audit", expect=1)
    assert f"BROKEN task {second}: vanished: the Redis mirror saw it" in report, report
    assert "1 problem(s) in 1 subject(s); 1 task chains checked" in report, report
