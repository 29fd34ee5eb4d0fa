"""Graceful shutdown with real workers: SIGTERM lets running attempts finish within the grace period; those that
cannot are recorded interrupted and requeued at once, never left ``running``; through honcho too, with the
project's own Procfile worker line (``make run`` stopped with Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.models import Task
from tests.tasks import test_worker
from tests.tasks.test_worker import ROOT, Cluster, wait_until_finished

cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py
pytestmark = pytest.mark.slow

GRACE = 2.0


@pytest.fixture
def graceful(cluster: Cluster) -> Cluster:
    """Workers started as the Procfile starts them: SIGTERM is a cold shutdown after the grace period."""
    cluster.env.update({"REMAP_SIGTERM": "SIGQUIT", "WORKER_SHUTDOWN_GRACE_SECONDS": str(GRACE)})
    return cluster


def wait_for(condition, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout}s\n{cluster.logs()}")
        time.sleep(0.05)


def running(task_id: str) -> bool:
    return Task.objects.filter(pk=task_id, state="running").exists()


def stop(
    process: subprocess.Popen, sig: int, within: float, cluster: Cluster, then: Callable[[], object] | None = None
) -> float:
    """Send ``sig`` to the process group (as honcho does) and call ``then``; returns how long the process took to
    exit."""
    sent = time.monotonic()
    os.killpg(process.pid, sig)
    if then is not None:
        then()
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still alive {within}s after {signal.Signals(sig).name}\n{cluster.logs()}")
    return time.monotonic() - sent


def starts(log: Path) -> list[tuple[str, int]]:
    return [(parts[1], int(parts[2])) for parts in map(str.split, log.read_text().splitlines()) if parts[0] == "start"]


def test_sigterm_interrupts_and_requeues_what_outlives_the_grace_period(graceful, tmp_path):
    log, gate = tmp_path / "executions.log", tmp_path / "release"
    worker = graceful.worker(1)
    [task_id] = graceful.submit(1, "record", payload={"log": str(log), "duration": 60, "until": str(gate)})
    wait_for(lambda: running(task_id), 30, "the task running", graceful)

    took = stop(worker, signal.SIGTERM, GRACE + 15, graceful)
    assert took >= GRACE - 0.5, "the running attempt was given its grace period"
    task = Task.objects.get(pk=task_id)
    assert (task.state, task.attempt_count, task.error_count) == ("queued", 1, 0)
    assert task.dispatched_at is not None, "published again at once (no backoff)"
    rows = list(task.history.order_by("seq").values_list("state_from", "state_to", "reason"))
    assert rows[-2][:2] == ("running", "interrupted") and "shut down" in rows[-2][2], rows
    assert rows[-1][:2] == ("interrupted", "queued") and "shutdown" in rows[-1][2], rows
    output = (tmp_path / "w0.log").read_text()
    assert "Traceback" not in output, output
    assert "interrupted and requeued" in output

    # Another worker runs it to the end, once: the message Celery put back and the new publish are one attempt.
    gate.touch()
    graceful.worker(1)
    wait_until_finished([task_id], graceful, timeout=60)
    time.sleep(1)
    task.refresh_from_db()
    assert (task.state, task.attempt_count) == ("completed", 2)
    assert starts(log) == [(task_id, 1), (task_id, 2)]


def test_an_attempt_that_ends_within_the_grace_period_completes(graceful, tmp_path):
    log, gate = tmp_path / "executions.log", tmp_path / "release"
    worker = graceful.worker(1)
    [task_id] = graceful.submit(1, "record", payload={"log": str(log), "duration": 60, "until": str(gate)})
    wait_for(lambda: running(task_id), 30, "the task running", graceful)

    stop(worker, signal.SIGTERM, GRACE + 15, graceful, then=gate.touch)  # it ends just after the SIGTERM
    task = Task.objects.get(pk=task_id)
    assert (task.state, task.attempt_count) == ("completed", 1)
    assert not task.history.filter(state_to="interrupted").exists()
    assert "Traceback" not in (tmp_path / "w0.log").read_text()


def test_workers_sharing_a_node_name_leave_each_others_attempts_alone(graceful, tmp_path):
    """Two workers started with one name (Celery only warns): the second's start-up recovery and the first's
    shutdown requeue act on their own instance's attempts, never on the live namesake's."""
    log, gate = tmp_path / "executions.log", tmp_path / "release"
    held = {"log": str(log), "duration": 60, "until": str(gate)}  # running until the test is done looking
    first = graceful.worker(1, node_name="twin@%h")
    [first_task] = graceful.submit(1, "record", payload=held)
    wait_for(lambda: running(first_task), 30, "the first worker's task running", graceful)
    graceful.worker(1, node_name="twin@%h")
    wait_for(
        lambda: (tmp_path / "w1.log").exists() and " ready." in (tmp_path / "w1.log").read_text(),
        60,
        "the namesake ready",
        graceful,
    )
    [second_task] = graceful.submit(1, "record", payload=held)
    wait_for(lambda: running(second_task), 30, "the namesake's task running", graceful)
    assert f":{first.pid}:" in Task.objects.get(pk=first_task).worker_id
    assert not Task.objects.get(pk=first_task).history.filter(state_to="interrupted").exists(), (
        "the namesake's start-up recovery interrupted a live worker's attempt"
    )

    stop(first, signal.SIGTERM, GRACE + 15, graceful)
    first_row, second_row = Task.objects.get(pk=first_task), Task.objects.get(pk=second_task)
    assert first_row.state == "queued" and first_row.history.filter(state_to="interrupted").count() == 1
    assert second_row.state == "running" and second_row.attempt_count == 1
    assert not second_row.history.filter(state_to="interrupted").exists(), "the namesake's attempt was interrupted"
    gate.touch()
    wait_until_finished([second_task, first_task], graceful, timeout=60)
    second_row.refresh_from_db()
    assert (second_row.state, second_row.attempt_count) == ("completed", 1)


def test_stopping_honcho_with_the_procfile_worker_leaves_nothing_running(graceful, tmp_path):
    """``make run`` stopped with Ctrl-C: honcho SIGTERMs the worker and SIGKILLs it 5 s later if it is still alive;
    the Procfile's worker line, with the default grace period, is done before that."""
    env = {**graceful.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "WORKER_CONCURRENCY": "1"}
    env.pop("WORKER_SHUTDOWN_GRACE_SECONDS")
    env.pop("REMAP_SIGTERM")  # the Procfile line sets it itself
    (tmp_path / "empty.env").write_text("")
    with open(tmp_path / "honcho.log", "wb") as out:
        honcho = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "honcho"),
                "-f",
                "Procfile",
                "-e",
                str(tmp_path / "empty.env"),
                "start",
                "worker",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    graceful.processes.append(honcho)
    log = tmp_path / "executions.log"
    [task_id] = graceful.submit(1, "record", payload={"log": str(log), "duration": 30})
    wait_for(lambda: running(task_id), 30, "the task running", graceful)

    honcho.send_signal(signal.SIGINT)  # Ctrl-C reaches honcho only: it runs each process in a session of its own
    try:
        honcho.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"honcho still running\n{(tmp_path / 'honcho.log').read_text()}")
    output = (tmp_path / "honcho.log").read_text()
    task = Task.objects.get(pk=task_id)
    assert task.state == "queued", output
    assert task.history.filter(state_to="interrupted", reason__contains="shut down").exists()
    assert "SIGKILL" not in output, output
    assert "Traceback" not in output, output
