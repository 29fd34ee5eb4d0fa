"""A private PostgreSQL cluster archiving its WAL to a pgBackRest repository, both in one temporary directory.

Point-in-time recovery's test (``tests/persistence/test_point_in_time.py``) and the physical restore of
``bench.restore`` run the same cluster: initdb as the postgres user, ``archive_command`` = ``pgbackrest
archive-push``, a stanza of its own, ``pgbackrest restore`` into its data directory. Debian's ``pgbackrest``
package (``make pgbackrest``) and PostgreSQL's ``initdb`` and ``pg_ctl`` must be on the PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
STANZA = "crux"
TOOLS = ("pgbackrest", "initdb", "pg_ctl")


class ClusterError(RuntimeError):
    """A PostgreSQL or pgBackRest command of the private cluster failed, or did not finish in time."""


def missing_tools() -> list[str]:
    """The tools the cluster needs that are not installed."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def as_postgres(*args: str, check: bool = True, timeout: float | None = 300) -> subprocess.CompletedProcess:
    """PostgreSQL's tools refuse to run as root: run them as the postgres user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(args)}\n{done.stdout}\n{done.stderr}")
    return done


class Cluster:
    """A PostgreSQL cluster archiving its WAL to a pgBackRest repository, both under ``root``.

    ``fsync`` off suits a test (nothing outlives it); a measure of what production pays keeps the server's default,
    on. ``compress_type`` is pgBackRest's for the backup and the archived WAL.
    """

    def __init__(self, root: Path, port: int, *, fsync: bool = True, compress_type: str = "lz4") -> None:
        self.root, self.port = root, port
        self.data, self.repo, self.run = root / "data", root / "repo", root / "run"
        self.config = root / "pgbackrest.conf"
        for directory in (self.repo, self.run, root / "log"):
            directory.mkdir()
        self.config.write_text(
            f"[global]\nrepo1-path={self.repo}\nlog-path={root / 'log'}\nlock-path={self.run}\n"
            f"log-level-console=warn\nlog-level-file=off\nstart-fast=y\ncompress-type={compress_type}\n"
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
                f"archive_timeout = 60\nmax_wal_senders = 0\nfsync = {'on' if fsync else 'off'}\n"
            )

    @property
    def base_url(self) -> str:
        """The server's URL without a database (``bench.dataset.configure``'s ``BENCH_PG_URL``)."""
        return f"postgres://postgres@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/crux"

    def pgbackrest(self, *args: str, timeout: float | None = 300) -> str:
        """Run pgBackRest on this cluster's stanza; its output."""
        return as_postgres("pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *args, timeout=timeout).stdout

    def start(self, timeout: int = 60) -> None:
        """Start the server and wait until it accepts connections (after crash or archive recovery has reached
        a consistent state, when there is one)."""
        log = str(self.root / "log" / "server.log")
        as_postgres("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", str(timeout), "start", timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would, no shutdown checkpoint); nothing if it is not running."""
        as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def query(self, sql: str, database: str = "crux") -> list[tuple]:
        with psycopg.connect(f"{self.base_url}/{database}", autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def manage(self, *args: str, script: str | None = None, expect: int = 0) -> str:
        """``manage.py args`` (or the Python ``script`` with ``args``) on this cluster's database; its output."""
        env = {**os.environ, "DATABASE_URL": self.url, "DJANGO_SETTINGS_MODULE": "crux.settings"}
        command = [sys.executable, "-c", script, *args] if script else [sys.executable, "manage.py", *args]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != expect:
            raise ClusterError(
                f"{' '.join(command)} exited {done.returncode}, not {expect}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def wal_archived(self, timeout: float = 60) -> None:
        """Switch to a new WAL segment and wait until the finished one is in the repository."""
        (segment,) = self.query("SELECT pg_walfile_name(pg_switch_wal())")[0]
        deadline = time.monotonic() + timeout
        while self.query("SELECT last_archived_wal FROM pg_stat_archiver")[0][0] != segment:
            if time.monotonic() > deadline:
                raise ClusterError(f"WAL segment {segment} was not archived within {timeout:.0f} s")
            time.sleep(0.2)

    def writable(self, timeout: float = 60) -> None:
        """Wait until recovery has ended, then prove the server accepts writes: a transaction id is assigned
        (PostgreSQL assigns none while in recovery)."""
        deadline = time.monotonic() + timeout
        while self.query("SELECT pg_is_in_recovery()")[0][0]:
            if time.monotonic() > deadline:
                raise ClusterError(f"recovery did not end within {timeout:.0f} s")
            time.sleep(0.05)
        self.query("SELECT pg_current_xact_id()")


@contextmanager
def private_cluster(prefix: str, port: int, *, fsync: bool = True, compress_type: str = "lz4") -> Iterator[Cluster]:
    """A started ``Cluster`` in a new temporary directory, stopped and removed with everything in it at the end, also
    on failure. Not under pytest's temporary root: the postgres user must reach the directory, and that root is
    private."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        cluster = Cluster(root, port, fsync=fsync, compress_type=compress_type)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
