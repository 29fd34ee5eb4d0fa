"""The worker and recovery tests of tests/tasks/test_worker.py again, with RabbitMQ as the broker.

Each test gets a virtual host of its own on the machine's RabbitMQ (127.0.0.1:5672), created before and deleted
after (``rabbitmqctl``), so no queue, message or binding outlives it or meets another run's. Redis stays the
mirror. What differs on RabbitMQ: a lost publish is found by the age rule (no receipts in the broker), and
queues carry x-max-priority.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tasks.models import Task
from tests.tasks.test_worker import (
    SUBMIT,
    Cluster,
    test_a_poison_pill_fails_after_its_limit_while_other_tasks_flow,
    test_a_restarted_worker_recovers_its_own_tasks_at_once,
    test_cancel_terminates_a_running_task,
    test_sigkilling_worker_children_loses_nothing_and_runs_nothing_twice,
    test_worker_loss_is_detected_within_lease_and_sweep_behind_a_backlog,
    transitions,
    wait_until_finished,
)

pytestmark = pytest.mark.slow

# Collected here too, where ``cluster`` below puts them on RabbitMQ.
__all__ = [
    "test_a_poison_pill_fails_after_its_limit_while_other_tasks_flow",
    "test_a_restarted_worker_recovers_its_own_tasks_at_once",
    "test_cancel_terminates_a_running_task",
    "test_sigkilling_worker_children_loses_nothing_and_runs_nothing_twice",
    "test_worker_loss_is_detected_within_lease_and_sweep_behind_a_backlog",
]


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A virtual host of this test's own; guest may use it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed: these tests need the machine's RabbitMQ")
    vhost = f"crux-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def cluster(tmp_path: Any, private_redis: Any, rabbitmq_url: str, live_db: Any, user: Any) -> Iterator[Cluster]:
    """Workers and beat on RabbitMQ (set up after the vhost, so torn down before it is deleted)."""
    cluster = Cluster(tmp_path, private_redis.url)
    cluster.env["CELERY_BROKER_URL"] = rabbitmq_url
    yield cluster
    cluster.stop()
    vhost = rabbitmq_url.rsplit("/", 1)[1]
    assert f"amqp://guest:**@127.0.0.1:5672/{vhost}" in cluster.logs_in_full(), "the workers were not on RabbitMQ"


def test_a_lost_publish_is_published_again_by_its_age(cluster: Cluster) -> None:
    """No receipts in RabbitMQ: a task whose publish never happened is re-published after REDISPATCH_AFTER_SECONDS."""
    crashed = cluster.run_script(
        SUBMIT, json.dumps({"owner": "alice", "count": 1, "handler": "echo", "die_before_publish": True})
    )
    assert crashed.returncode == -signal.SIGKILL
    task = Task.objects.get()
    assert (task.state, task.dispatch_count) == ("queued", 1)
    cluster.worker(concurrency=1)
    cluster.housekeeping()
    wait_until_finished([str(task.pk)], cluster, timeout=60)
    task.refresh_from_db()
    assert (task.state, task.dispatch_count) == ("completed", 2)
    assert transitions(str(task.pk)) == ["queued", "queued", "running", "completed"]
    assert task.history.get(seq=2).reason.startswith("re-dispatched")
