"""More than one machine, on one: two web processes and two worker nodes on the same database, one node killed.

Every task submitted through either web process runs to completion exactly once per attempt; the killed node's
running tasks are recovered (lease expired) and finished by the other node. Each gunicorn instance has a control
socket of its own (gunicorn's default is one path per user, so a second instance took the first one's over).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from tasks.models import Task
from tests.conftest import free_port
from tests.tasks.test_worker import ROOT, Cluster, transitions, wait_until_finished

pytestmark = pytest.mark.slow


class Web:
    """One gunicorn instance of the project's configuration on a port of its own."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.port = free_port()
        self.log = cluster.tmp_path / f"{name}.log"
        env = {**cluster.env, "PORT": str(self.port), "WEB_CONCURRENCY": "2", "WEB_ACCESS_LOG": ""}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "crux.wsgi", "-c", "python:crux.gunicorn_conf"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.control_socket = ROOT / "var" / "run" / f"gunicorn-127.0.0.1-{self.port}.ctl"

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health/live", timeout=5).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text(errors="replace")
                assert time.monotonic() < deadline, "web did not answer within 60 s"
                time.sleep(0.2)

    def submit(self, token: str, body: dict[str, Any]) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/tasks/",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201
            return json.loads(answer.read())["id"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path, private_redis: Any, live_db: Any, user: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, private_redis.url)
    yield cluster
    cluster.stop()


def test_two_web_processes_and_two_nodes_lose_nothing_when_a_node_is_killed(cluster: Cluster, user: Any) -> None:
    webs = [Web(cluster, "web-a"), Web(cluster, "web-b")]
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
        ids = [webs[i % 2].submit(token, {**body, "title": f"node test {i}"}) for i in range(40)]
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
