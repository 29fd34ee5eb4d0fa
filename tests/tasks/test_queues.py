"""Named queues and priorities: a task goes to its queue (its handler's, or its own) with its priority, only the
workers consuming that queue run it, a worker started without -Q consumes every task queue but housekeeping, an
unknown queue is refused before anything is written, and one worker serves a backlog highest priority first."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from celery import Celery
from django.conf import settings

from tasks import services
from tasks.audit import Channel
from tasks.dispatch import broker_priority
from tasks.exceptions import InvalidTaskData
from tasks.models import Task, TaskHistory
from tests.conftest import RUN_PREFIX, TEST_QUEUE, queue_keys
from tests.handlers import SPECIAL_QUEUE
from tests.tasks import test_worker
from tests.tasks.test_worker import HOUSEKEEPING_QUEUE, wait_until_finished

pytest_plugins = ["tests.api_support"]
cluster = test_worker.cluster  # the real workers and private broker of tests/tasks/test_worker.py

EXTRA_QUEUE = f"{RUN_PREFIX}.extra"

SUBMIT = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from tasks import services
from tasks.audit import Channel
owner = get_user_model().objects.get(username="alice")
ids = []
for fields in json.loads(sys.argv[1]):
    task = services.submit_task(owner=owner, actor=owner, channel=Channel.API, title=fields["handler"], **fields)
    ids.append(str(task.pk))
print(json.dumps(ids), flush=True)
"""


def submit(cluster: test_worker.Cluster, *specs: dict[str, Any]) -> list[str]:
    done = cluster.run_script(SUBMIT, json.dumps(list(specs)))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def with_queues(cluster: test_worker.Cluster) -> test_worker.Cluster:
    cluster.env["TASK_QUEUES"] = EXTRA_QUEUE
    cluster.env["TASK_HANDLERS_EXTRA"] += ",special=tests.handlers.on_special_queue"
    return cluster


def consumed_queues(cluster: test_worker.Cluster, worker_name: str) -> set[str]:
    probe = Celery("queues", set_as_current=False, broker=cluster.env["CELERY_BROKER_URL"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replies = probe.control.inspect(timeout=1).active_queues() or {}
        for hostname, queues in replies.items():
            if hostname.startswith(f"{worker_name}@"):
                return {q["name"] for q in queues}
        time.sleep(0.2)
    pytest.fail(f"{worker_name} did not answer\n{cluster.logs()}")


@pytest.fixture
def special_handlers(settings: Any) -> None:
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, "special": "tests.handlers.on_special_queue"}
    settings.TASK_QUEUES = [EXTRA_QUEUE]


# --- Refused before anything is written (no broker needed).


@pytest.mark.django_db
@pytest.mark.usefixtures("special_handlers")
@pytest.mark.parametrize(
    ("queue", "message"),
    [("nowhere", "Unknown queue"), (settings.CELERY_HOUSEKEEPING_QUEUE, "housekeeping"), ("bad name!", "Unknown")],
)
def test_a_submit_to_an_unknown_or_the_housekeeping_queue_is_a_400_naming_queue(
    api: Any, user: Any, queue: str, message: str
) -> None:
    response = api.post("/api/tasks/", {"title": "t", "handler": "echo", "queue": queue}, format="json")
    assert response.status_code == 400, response.data
    assert list(response.data) == ["queue"] and message in str(response.data["queue"])
    with pytest.raises(InvalidTaskData) as refused:
        services.submit_task(owner=user, actor=user, channel=Channel.ADMIN, title="t", queue=queue)
    assert "queue" in refused.value.errors
    with pytest.raises(InvalidTaskData):
        services.create_task(owner=user, actor=user, channel=Channel.ADMIN, title="t", queue=queue)
    assert Task.objects.count() == 0 and TaskHistory.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("special_handlers")
@pytest.mark.parametrize(
    ("body", "field"),
    [({"priority": 10}, "priority"), ({"priority": -1}, "priority"), ({"priority": "high"}, "priority")],
)
def test_a_bad_priority_is_a_400_naming_it(api: Any, body: dict[str, Any], field: str) -> None:
    response = api.post("/api/tasks/", {"title": "t", **body}, format="json")
    assert response.status_code == 400 and list(response.data) == [field], response.data
    assert Task.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("special_handlers")
def test_the_api_takes_queue_priority_and_limits_and_shows_them(api: Any) -> None:
    body = {"title": "t", "handler": "special", "priority": 2, "soft_time_limit": 5, "time_limit": 9}
    response = api.post("/api/tasks/", body, format="json")
    assert response.status_code == 201, response.data
    shown = api.get(f"/api/tasks/{response.data['id']}").data
    assert (shown["queue"], shown["priority"], shown["soft_time_limit"], shown["time_limit"]) == (
        SPECIAL_QUEUE,
        2,
        5.0,
        9.0,
    ), "the handler's queue, the submitted priority and limits"
    assert shown["celery_task_id"] == f"{shown['id']}.1"
    other = api.post("/api/tasks/", {"title": "t", "handler": "special", "queue": EXTRA_QUEUE}, format="json").data
    assert (other["queue"], other["priority"]) == (EXTRA_QUEUE, 7), "the submitted queue, the handler's priority"
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    submit_fields = schema["components"]["schemas"]["TaskSubmitRequest"]["properties"]
    assert {"queue", "priority", "soft_time_limit", "time_limit"} <= set(submit_fields)
    assert set(schema["components"]["schemas"]["QueueEnum"]["enum"]) == {TEST_QUEUE, EXTRA_QUEUE, SPECIAL_QUEUE}


@pytest.mark.usefixtures("live_db")
def test_each_publish_goes_to_its_queue_and_priority_list_with_an_id_of_its_own(user: Any) -> None:
    """On Redis, one list per priority step: the message of a task of priority p waits in the list kombu pops
    at its rank; its Celery id names the task and the publish."""
    from persistence import dispatch as broker

    client = broker.client()
    keys = queue_keys()
    assert keys[0] == TEST_QUEUE and len(keys) == 10
    before = {key: client.llen(key) for key in keys}
    for priority in (9, 0, 5):
        task = services.submit_task(owner=user, actor=user, channel=Channel.API, title="t", priority=priority)
        key = keys[broker_priority(priority)]
        assert client.llen(key) == before[key] + 1, (priority, key)
        message = json.loads(client.lindex(key, 0))
        assert message["headers"]["id"] == task.celery_task_id == f"{task.pk}.1"
        assert message["headers"]["argsrepr"] == repr([str(task.pk)])
        client.lpop(key)
    assert broker_priority(9) == 0 and broker_priority(0) == 9, "Redis pops the lowest step first"


# --- Real workers.


@pytest.mark.slow
def test_a_queue_runs_only_on_workers_consuming_it_and_a_worker_without_q_consumes_every_task_queue(cluster):
    with_queues(cluster)
    cluster.worker(1, TEST_QUEUE)  # w0: the default queue only
    default, special, overridden, moved = submit(
        cluster,
        {"handler": "echo"},
        {"handler": "special"},  # its handler's queue
        {"handler": "echo", "queue": EXTRA_QUEUE},  # a queue of its own
        {"handler": "special", "queue": ""},  # the default queue, in place of its handler's
    )
    wait_until_finished([default, moved], cluster, timeout=60)
    time.sleep(1.5)
    states = dict(Task.objects.filter(pk__in=[special, overridden]).values_list("queue", "state"))
    assert states == {SPECIAL_QUEUE: "queued", EXTRA_QUEUE: "queued"}, "a worker ran a queue it does not consume"
    assert Task.objects.get(pk=moved).result["worker"].startswith("w0@")

    cluster.worker(1)  # w1: no -Q
    assert consumed_queues(cluster, "w1") == {TEST_QUEUE, EXTRA_QUEUE, SPECIAL_QUEUE}, "housekeeping is not one"
    wait_until_finished([special, overridden], cluster, timeout=60)
    assert Task.objects.get(pk=special).result["worker"].startswith("w1@")
    assert set(Task.objects.filter(pk__in=[default, special, overridden, moved]).values_list("state", flat=True)) == {
        "completed"
    }
    assert HOUSEKEEPING_QUEUE not in consumed_queues(cluster, "w0")


@pytest.mark.slow
def test_one_worker_starts_a_backlog_highest_priority_first(cluster, tmp_path):
    log = str(tmp_path / "executions.log")
    priorities = [1, 8, 5, 1, 9, 5, 8, 0]
    ids = submit(cluster, *({"handler": "record", "priority": p, "request_payload": {"log": log}} for p in priorities))
    cluster.worker(1)  # the whole backlog waits in the broker before it starts
    wait_until_finished(ids, cluster, timeout=60)
    started = list(Task.objects.filter(pk__in=ids).order_by("started_at").values_list("priority", "created_at"))
    assert [p for p, _ in started] == sorted(priorities, reverse=True), started
    for (p, first), (q, then) in pairwise(started):
        assert p > q or first < then, "first in, first out within a priority"


@pytest.mark.usefixtures("live_db")
def test_dispatch_due_publishes_the_highest_priority_first(user: Any) -> None:
    from django.utils import timezone

    run_at = timezone.now() + timedelta(seconds=0.3)
    tasks = [
        services.submit_task(owner=user, actor=user, channel=Channel.API, title="t", priority=p, run_at=run_at)
        for p in (2, 7, 0, 9, 7)
    ]
    time.sleep(0.4)
    assert services.publish_due() == len(tasks)
    published = Task.objects.filter(pk__in=[t.pk for t in tasks]).order_by("dispatched_at")
    assert list(published.values_list("priority", flat=True)) == [9, 7, 7, 2, 0]
    assert all(t.celery_task_id == f"{t.pk}.1" for t in published)
