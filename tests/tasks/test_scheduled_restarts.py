"""A scheduled task's wait lives in SQL: with real workers, beat and a private broker, a task submitted 6 s ahead
survives the kill and restart of its worker and of the broker's Redis while it waits, starts within a second of
its time and runs once; tasks cancelled or soft-deleted before their time never run."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import services
from tasks.audit import Channel
from tasks.models import Task, TaskHistory
from tests.tasks import test_worker
from tests.tasks.test_worker import wait_for, wait_until_finished

cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py

# Beat's crux.dispatch_due period: a due task waits at most this long to be published, so its start is bounded by
# it plus a publish and a worker's pick-up (tens of milliseconds).
DISPATCH_DUE_SECONDS = 0.5


def submit_at(user, run_at, title: str) -> Task:
    return services.submit_task(owner=user, actor=user, channel=Channel.API, run_at=run_at, title=title, handler="echo")


def claims(task: Task) -> int:
    return TaskHistory.objects.filter(task=task, state_to="running").count()


@pytest.mark.slow
def test_a_scheduled_task_survives_worker_and_redis_restarts_and_starts_on_time(cluster, private_redis, user):
    cluster.env["DISPATCH_DUE_SECONDS"] = str(DISPATCH_DUE_SECONDS)
    first_worker = cluster.worker(1)
    cluster.housekeeping()
    wait_for(lambda: cluster.logs_in_full().count(" ready.") >= 2, cluster, "workers ready")

    # Long enough for the restarts below and the workers' reconnection on a loaded machine (two suites at once
    # took 3.5-5.4 s): the start is measured against a time that found every process connected.
    run_at = timezone.now() + timedelta(seconds=6)
    task = submit_at(user, run_at, "scheduled")
    cancelled = submit_at(user, run_at, "cancelled before its time")
    deleted = submit_at(user, run_at, "deleted before its time")
    services.cancel(cancelled.pk, actor=user, channel=Channel.API, reason="not needed")
    services.soft_delete(deleted.pk, user=user, channel=Channel.API, reason="not needed")

    # While they wait: the task worker is killed and replaced, and the broker's Redis is killed and restarted
    # empty on the same port (beat and the housekeeping worker reconnect to it).
    connected = cluster.logs_in_full().count("Connected to")
    os.killpg(first_worker.pid, signal.SIGKILL)
    first_worker.wait(timeout=30)
    private_redis.restart()
    cluster.worker(1)
    # The new worker and the housekeeping worker (which runs crux.dispatch_due) both connect to the new broker.
    wait_for(lambda: cluster.logs_in_full().count("Connected to") >= connected + 2, cluster, "workers reconnected")
    assert timezone.now() < run_at - timedelta(seconds=1), "the restarts took the whole wait: nothing was tested"
    assert Task.objects.get(pk=task.pk).dispatched_at is None, "published before its time"

    wait_until_finished([str(task.pk)], cluster, timeout=60)
    task.refresh_from_db()
    delay = (task.started_at - task.run_after).total_seconds()
    print(f"scheduled start measured {delay:.3f} s after its time")
    assert task.run_after == run_at
    assert task.state == "completed", cluster.logs()
    assert 0 <= delay < 1.0, cluster.logs()
    assert (task.attempt_count, task.dispatch_count, claims(task)) == (1, 1, 1)

    # Past the others' time too, with beat still publishing what is due: neither started. The cancelled one was
    # never published; the deleted one may be (the sweep publishes a queued task when its time has come), and
    # the worker that receives it cancels it without running it.
    time.sleep(2 * DISPATCH_DUE_SECONDS)
    cancelled.refresh_from_db()
    assert (cancelled.state, cancelled.dispatch_count, cancelled.started_at, claims(cancelled)) == (
        "cancelled",
        0,
        None,
        0,
    )
    wait_for(lambda: Task.objects.get(pk=deleted.pk).state == "cancelled", cluster, "the deleted task cancelled")
    deleted.refresh_from_db()
    assert (deleted.deleted_at is not None, deleted.started_at, deleted.attempt_count, claims(deleted)) == (
        True,
        None,
        0,
        0,
    )
    assert "not run" in deleted.history.latest("seq").reason
