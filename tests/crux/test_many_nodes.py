"""More than one machine, on one: two web processes and two worker nodes on the same database, one node killed.

Every task submitted through either web process runs to completion exactly once per attempt; the killed node's
running tasks are recovered (lease expired) and finished by the other node. Each gunicorn instance has a control
socket of its own (gunicorn's default is one path per user, so a second instance took the first one's over).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from tasks.models import Task
from tests.processes import WebServer
from tests.tasks.test_worker import Cluster, transitions, wait_until_finished

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path, private_redis: Any, live_db: Any, user: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, private_redis.url)
    yield cluster
    cluster.stop()


def submit(web: WebServer, token: str, body: dict[str, Any]) -> str:
    status, answer = web.request("/api/tasks/", token, body)
    assert status == 201
    return json.loads(answer)["id"]


def test_two_web_processes_and_two_nodes_lose_nothing_when_a_node_is_killed(cluster: Cluster, user: Any) -> None:
    webs = [WebServer(cluster.env, cluster.tmp_path / f"web-{name}.log") for name in "ab"]
    try:
        cluster.housekeeping()
        node_a = cluster.worker(2, node_name="a@%h")
        cluster.worker(2, node_name="b@%h")
        for web in webs:
            web.wait()
        assert all(web.control_socket.exists() for web in webs), [str(web.control_socket) for web in webs]
        assert webs[0].control_socket != webs[1].control_socket

        token = Token.objects.create(user=user).key
        log = cluster.tmp_path / "executions.log"
        body = {"handler": "record", "payload": {"log": str(log), "duration": 0.3}}
        ids = [submit(webs[i % 2], token, {**body, "title": f"node test {i}"}) for i in range(40)]
        deadline = time.monotonic() + 60
        while not Task.objects.filter(pk__in=ids, state="running", worker_id__startswith="a@").exists():
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.05)
        os.killpg(node_a.pid, signal.SIGKILL)  # the whole node: main process and pool
        node_a.wait(timeout=10)
        cluster.processes.remove(node_a)

        wait_until_finished(ids, cluster, timeout=120)
    finally:
        for web in webs:
            web.stop()
    assert not any(web.control_socket.exists() for web in webs), "a control socket outlived its gunicorn"

    tasks = list(Task.objects.filter(pk__in=ids))
    assert [t.state for t in tasks] == ["completed"] * 40
    starts = Counter(tuple(line.split()[1:3]) for line in log.read_text().splitlines() if line.startswith("start "))
    assert max(starts.values()) == 1, "an attempt was executed twice"
    recovered = [t for t in tasks if "interrupted" in transitions(str(t.pk))]
    assert recovered, "the kill interrupted no running task"
    for task in recovered:
        assert task.worker_id.startswith("b@"), "the survivor finished the killed node's task"
        assert "lease expired" in task.history.get(state_to="interrupted").reason
