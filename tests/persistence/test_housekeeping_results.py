"""Housekeeping jobs store no Celery result row and are silent when idle: a real worker runs the sweep, the
reconcile and the re-dispatch with nothing to do, and the only line in its log is the one job that acted."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django_celery_results.models import TaskResult

from crux.celery import QuietHousekeeping, app
from tasks.dispatch import EXECUTE_TASK
from tests.conftest import RUN_PREFIX, child_database_url

ROOT = Path(__file__).resolve().parents[2]
HOUSEKEEPING_QUEUE = "crux.housekeeping"
IDLE_JOBS = ("crux.recovery_sweep", "crux.reconcile_mirror")


def housekeeping_task_names() -> list[str]:
    app.loader.import_default_modules()
    return sorted(name for name in app.tasks if name.startswith("crux.") and name != EXECUTE_TASK)


def test_every_housekeeping_task_ignores_its_result_and_task_execution_keeps_it() -> None:
    names = housekeeping_task_names()
    assert {"crux.recovery_sweep", "crux.reconcile_mirror", "crux.backup", "crux.auto_purge"} <= set(names)
    assert [name for name in names if not app.tasks[name].ignore_result] == []
    assert app.tasks[EXECUTE_TASK].ignore_result is False


@pytest.mark.parametrize("name", housekeeping_task_names())
def test_celery_info_lines_about_a_housekeeping_job_are_dropped_but_its_warnings_kept(name: str) -> None:
    quiet = QuietHousekeeping()
    received = logging.LogRecord("celery.worker.strategy", logging.INFO, "", 0, "Task %(name)s received", (), None)
    received.args = {"id": "1", "name": name}
    sent = logging.LogRecord("celery.beat", logging.INFO, "", 0, "Sending due task %s (%s)", ("sweep", name), None)
    failed = logging.LogRecord("celery.app.trace", logging.ERROR, "", 0, "Task %(name)s failed", (), None)
    failed.args = {"id": "1", "name": name}
    work = logging.LogRecord("celery.app.trace", logging.INFO, "", 0, "Task %(name)s succeeded", (), None)
    work.args = {"id": "1", "name": EXECUTE_TASK}
    assert (quiet.filter(received), quiet.filter(sent), quiet.filter(failed), quiet.filter(work)) == (
        False,
        False,
        True,
        True,
    )


@pytest.fixture
def housekeeping_worker(live_db: Any, private_redis: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real worker of the housekeeping queue on the test database and a private broker; yields (node, log)."""
    log = tmp_path / "worker.log"
    node = f"hk-{RUN_PREFIX}@localhost"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "crux.settings",
        "DATABASE_URL": child_database_url(),
        "REDIS_URL": private_redis.url,
        "CELERY_BROKER_URL": private_redis.url,
        "REDIS_KEY_PREFIX": RUN_PREFIX,
        "AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    args = ["worker", "-P", "solo", "-n", node, "-Q", HOUSEKEEPING_QUEUE, "--without-gossip", "--without-mingle"]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "crux", *args, "-l", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield node, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_a_real_worker_runs_idle_housekeeping_without_result_rows_or_log_lines(
    housekeeping_worker: tuple[str, Path], private_redis: Any
) -> None:
    node, log = housekeeping_worker
    jobs = (*IDLE_JOBS, "crux.audit_checkpoint")
    # An app of the private broker: control messages and their replies travel through its own producer pool.
    probe = Celery("housekeeping-test", set_as_current=False, broker=private_redis.url)
    for name in jobs:
        probe.send_task(name, queue=HOUSEKEEPING_QUEUE)
    deadline = time.monotonic() + 60
    while True:
        stats = probe.control.inspect([node], timeout=1).stats() or {}
        done = stats.get(node, {}).get("total", {})
        if all(done.get(name) == 1 for name in jobs):
            break
        assert time.monotonic() < deadline, f"jobs not run within 60 s: {done}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    assert TaskResult.objects.count() == 0
    while "audit checkpoint written" not in log.read_text():  # the one job that acted says so
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    records = [line for line in log.read_text().splitlines() if line[:1].isdigit()]  # not the start banner
    quiet = ("crux.recovery_sweep", "crux.reconcile_mirror", "crux.audit_checkpoint", "recovery", "drift")
    assert [line for line in records if any(word in line for word in quiet)] == [], "\n".join(records)
