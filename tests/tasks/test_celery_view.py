"""Celery's own view of Crux tasks is honest: its result rows say FAILURE for a Crux failure and RETRY for a retry
wait, and it reads SUCCESS for a completion from the task; a revoke or terminate sent with Celery's CLI is recorded
as a cancel with its actor; each publish has a Celery id of its own, so a requeue after a revoke runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult
from django_celery_results.models import TaskResult

from crux.celery import app
from tasks.models import Task, TaskHistory
from tests.credentials import leaks
from tests.tasks import test_worker
from tests.tasks.test_queues import submit
from tests.tasks.test_worker import ROOT, transitions, wait_for, wait_until_finished

cluster = test_worker.cluster  # the real workers and private broker of tests/tasks/test_worker.py
pytestmark = pytest.mark.slow

REQUEUE = """
import sys
import django
django.setup()
from tasks import services
from tasks.audit import Channel
services.recover(sys.argv[1], actor="ops:test", channel=Channel.COMMAND, reason="run it after all")
"""


@pytest.fixture
def crux(cluster: test_worker.Cluster) -> test_worker.Cluster:
    """The cluster, its processes knowing the handlers these tests use."""
    cluster.env["TASK_HANDLERS_EXTRA"] += ",leak=tests.handlers.leak_secrets,flaky=tests.handlers.flaky"
    return cluster


def celery_control(cluster: test_worker.Cluster, *args: str) -> str:
    """Celery's own CLI, as an operator runs it against the cluster's broker."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "crux", "control", *args],
        cwd=ROOT,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def holding_the_one_process(log: Path, gate: Path) -> dict[str, Any]:
    """A task that keeps the worker's one process busy until the test creates ``gate`` (at most a minute)."""
    return {"handler": "record", "request_payload": {"log": str(log), "duration": 60, "until": str(gate)}}


def wait_for_state(task_id: str, state: str, cluster: test_worker.Cluster) -> Task:
    wait_for(lambda: Task.objects.get(pk=task_id).state == state, cluster, f"task {state}", timeout=30)
    return Task.objects.get(pk=task_id)


def result_of(task: Task) -> TaskResult:
    deadline = time.monotonic() + 10
    while not TaskResult.objects.filter(task_id=task.celery_task_id).exists():
        assert time.monotonic() < deadline, f"no result row for {task.celery_task_id}"
        time.sleep(0.1)
    return TaskResult.objects.get(task_id=task.celery_task_id)


def test_failure_retry_and_completion_are_failure_retry_and_success_for_celery(crux):
    cluster = crux
    cluster.worker(2)
    done, failed, retried = submit(
        cluster,
        {"handler": "echo"},
        {"handler": "leak", "request_payload": {"marker": "provider refused", "fail": True}},  # secrets in its error
        {"handler": "flaky", "max_attempts": 3, "retry_backoff": 60},  # waits a minute: it stays in its wait
    )
    wait_until_finished([done, failed], cluster, timeout=60)
    wait_for(lambda: Task.objects.get(pk=retried).run_after is not None, cluster, "the retry wait", timeout=30)

    completed = Task.objects.get(pk=done)
    assert not TaskResult.objects.filter(task_id=completed.celery_task_id).exists(), "it would repeat the task row"
    success = AsyncResult(completed.celery_task_id, app=app)
    assert (success.state, success.result, success.date_done) == ("SUCCESS", "completed", completed.completed_at)

    task = Task.objects.get(pk=failed)
    failure = result_of(task)
    assert task.state == "failed" and failure.status == "FAILURE"
    assert "AttemptFailed" in failure.result and "provider refused" in failure.result
    assert leaks(failure.result + failure.traceback) == [], "a credential reached the row"
    assert failure.task_args is None, "its arguments (the task id its Celery id names) are derived, not stored"

    waiting = Task.objects.get(pk=retried)
    retry = result_of(waiting)
    assert (waiting.state, waiting.attempt_count) == ("queued", 1)
    assert retry.status == "RETRY" and "flaky: attempt 1 fails" in retry.result
    assert waiting.dispatch_count == 1 and waiting.dispatched_at is None, "Celery re-sent nothing: Crux's wait"


@pytest.mark.parametrize("remap_sigterm", ["", "SIGQUIT"])  # as the Procfile runs workers: SIGTERM starts a shutdown
def test_a_task_terminated_from_celerys_cli_ends_cancelled_with_its_actor(cluster, tmp_path, remap_sigterm):
    log = tmp_path / "executions.log"
    if remap_sigterm:
        cluster.env["REMAP_SIGTERM"] = remap_sigterm
    cluster.worker(1)
    # Long enough that the attempt is still running when Celery's CLI, slow to start on a loaded machine, acts.
    (task_id,) = submit(cluster, {"handler": "record", "request_payload": {"log": str(log), "duration": 60}})
    task = wait_for_state(task_id, "running", cluster)
    celery_control(cluster, "terminate", "SIGTERM", task.celery_task_id)
    task = wait_for_state(task_id, "cancelled", cluster)
    assert transitions(task_id) == ["queued", "running", "cancelled"]
    row = TaskHistory.objects.filter(task_id=task_id).latest("seq")
    assert (row.actor, row.channel) == ("celery:revoke", "celery"), (row.actor, row.channel)
    assert row.details["terminated"] is True and row.details["signal"] == "SIGTERM"
    assert row.details["hostname"].startswith("w0@") and row.details["celery_task_id"] == task.celery_task_id
    time.sleep(1)
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start"], "the attempt was not stopped"
    assert TaskHistory.objects.filter(task_id=task_id).count() == 3, "one cancel, nothing after it"


def test_a_queued_task_revoked_from_celerys_cli_is_cancelled_and_a_requeue_runs_it(cluster, tmp_path):
    log, gate = tmp_path / "executions.log", tmp_path / "release"
    cluster.worker(1)
    busy, waiting = submit(
        cluster, holding_the_one_process(log, gate), {"handler": "record", "request_payload": {"log": str(log)}}
    )
    wait_for_state(busy, "running", cluster)
    revoked = Task.objects.get(pk=waiting)
    assert revoked.state == "queued"
    celery_control(cluster, "revoke", revoked.celery_task_id)
    gate.touch()  # the worker takes the revoked message once its one process is free, and discards it
    task = wait_for_state(waiting, "cancelled", cluster)
    row = TaskHistory.objects.filter(task_id=waiting).latest("seq")
    assert (row.actor, row.channel, row.details["terminated"]) == ("celery:revoke", "celery", False)
    assert task.started_at is None and wait_for_state(busy, "completed", cluster)

    requeued = cluster.run_script(REQUEUE, waiting)
    assert requeued.returncode == 0, requeued.stderr
    task = wait_for_state(waiting, "completed", cluster)
    assert task.celery_task_id == f"{waiting}.2" != revoked.celery_task_id, "the same id would be discarded"
    assert transitions(waiting) == ["queued", "cancelled", "queued", "running", "completed"]


def test_crux_own_cancel_of_a_queued_task_writes_one_cancel(cluster, tmp_path):
    """Crux's cancel revokes the message too: the worker's discard of it must not record a second cancel."""
    log, gate = tmp_path / "executions.log", tmp_path / "release"
    cluster.worker(1)
    busy, waiting = submit(
        cluster, holding_the_one_process(log, gate), {"handler": "record", "request_payload": {"log": str(log)}}
    )
    wait_for_state(busy, "running", cluster)
    done = cluster.run_script(test_worker.CANCEL, waiting)
    assert done.returncode == 0, done.stderr
    gate.touch()
    wait_for_state(busy, "completed", cluster)
    time.sleep(1)  # the worker received the revoked message and discarded it
    assert transitions(waiting) == ["queued", "cancelled"]
    assert TaskHistory.objects.get(task_id=waiting, state_to="cancelled").actor == "ops:test"
    assert TaskResult.objects.get(task_id=Task.objects.get(pk=waiting).celery_task_id).status == "REVOKED"
