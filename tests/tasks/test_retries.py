"""Retries with backoff, durable in SQL: a failed attempt waits ``queued`` with its next time (``run_after``) and
its error in the history; ``PermanentFailure`` fails at once; ``Retry`` comes back when the handler asks; the
claim refuses a delivery before the task's time. In-process, then with a real worker, beat and broker."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tasks import services
from tasks.audit import Channel, format_timestamp
from tasks.exceptions import Retry
from tasks.execution import execute
from tasks.models import Task, TaskHistory
from tests.tasks import test_worker
from tests.tasks.test_worker import HOUSEKEEPING_QUEUE, transitions, wait_until_finished

pytest_plugins = ["tests.api_support"]
cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py

WORKER = "celery@test:1"
TEST_HANDLERS = {
    "flaky": "tests.handlers.flaky",
    "give_up": "tests.handlers.give_up",
    "come_back_later": "tests.handlers.come_back_later",
}


@pytest.fixture(autouse=True)
def test_handlers(settings):
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, **TEST_HANDLERS}


def submit(user, handler, **fields):
    fields.setdefault("title", f"{handler} task")
    return services.submit_task(owner=user, actor=user, channel=Channel.API, handler=handler, **fields)


def last_row(task: Task) -> TaskHistory:
    return task.history.latest("seq")


@pytest.mark.parametrize("base", [0.2, 2.0, 10.0])
def test_the_backoff_doubles_per_attempt_with_jitter_and_stops_at_its_cap(base):
    rng = random.Random(14)
    cap = base * 8
    for attempt in range(1, 8):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        delays = [services.retry_delay(base, attempt, cap=cap, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 4, "no jitter: tasks failing together would come back together"
    assert services.retry_delay(base, 1, cap=base / 4, rng=rng) <= base / 4


def test_the_base_backoff_is_the_tasks_else_its_handlers_else_the_setting(settings):
    settings.TASK_RETRY_BACKOFF_SECONDS = 7.5
    assert services.retry_backoff(Task(handler="fail")) == 7.5
    assert services.retry_backoff(Task(handler="flaky")) == 0.2  # tests.handlers.flaky.retry_backoff
    assert services.retry_backoff(Task(handler="flaky", retry_backoff=42.0)) == 42.0
    assert services.retry_backoff(Task(handler="fail", retry_backoff=0.0)) == 0.0
    assert services.retry_backoff(Task(handler="unregistered")) == 7.5


@pytest.mark.usefixtures("live_db")
def test_a_failed_attempt_waits_queued_in_sql_with_its_error_and_next_time(user):
    task = submit(user, "fail", request_payload={"message": "provider 503"}, retry_backoff=100.0)
    before = timezone.now()
    assert execute(str(task.pk), worker_id=WORKER) == "queued"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.error_count) == ("queued", 1, 1)
    assert "RuntimeError: provider 503" in task.last_error
    assert before + timedelta(seconds=50) <= task.run_after <= timezone.now() + timedelta(seconds=100)
    assert (task.dispatched_at, task.dispatch_count, task.worker_id) == (None, 1, ""), "published before its time"
    row = last_row(task)
    assert (row.state_from, row.state_to, row.channel) == ("running", "queued", "worker")
    assert row.error_message == task.last_error
    assert row.details["next_attempt_at"] == format_timestamp(task.run_after)
    assert "RuntimeError: provider 503" in row.details["error"]
    assert f"next attempt at {format_timestamp(task.run_after)}" in row.reason
    assert "attempt 1 of 3" in row.reason


@pytest.mark.usefixtures("live_db")
def test_the_last_attempt_fails_the_task_with_every_error_counted(user, settings):
    task = submit(user, "fail", max_attempts=2, retry_backoff=0.0)
    assert execute(str(task.pk), worker_id=WORKER) == "queued"
    assert Task.objects.get(pk=task.pk).dispatch_count == 2, "no wait: published again at once"
    assert execute(str(task.pk), worker_id=WORKER) == "failed"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.error_count) == ("failed", 2, 2)
    assert transitions(str(task.pk)) == ["queued", "running", "queued", "running", "failed"], "published at once"
    assert "attempt limit reached (2 of 2)" in last_row(task).reason
    assert last_row(task).error_message == task.last_error


@pytest.mark.usefixtures("live_db")
def test_a_permanent_failure_fails_at_once_whatever_attempts_are_left(user):
    task = submit(user, "give_up", max_attempts=5, request_payload={"message": "bad request"})
    assert execute(str(task.pk), worker_id=WORKER) == "failed"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.error_count, task.run_after) == ("failed", 1, 1, None)
    assert "PermanentFailure: bad request" in task.last_error
    assert "a permanent failure" in last_row(task).reason


@pytest.mark.usefixtures("live_db")
def test_a_handler_asks_for_its_retry_at_a_time_of_its_choosing(user):
    task = submit(user, "come_back_later", request_payload={"after": 30}, retry_backoff=3600.0)
    before = timezone.now()
    assert execute(str(task.pk), worker_id=WORKER) == "queued"
    task.refresh_from_db()
    assert before + timedelta(seconds=30) <= task.run_after <= timezone.now() + timedelta(seconds=30)
    assert "as the handler asked" in last_row(task).reason and "Retry: rate limited" in task.last_error


@pytest.mark.usefixtures("live_db")
def test_a_retry_asked_on_the_last_attempt_fails_the_task(user):
    task = submit(user, "come_back_later", request_payload={"after": 0}, max_attempts=1)
    assert execute(str(task.pk), worker_id=WORKER) == "failed"
    assert "attempt limit reached (1 of 1)" in last_row(Task.objects.get(pk=task.pk)).reason


def test_retry_needs_one_aware_time():
    with pytest.raises(ValueError, match="exactly one"):
        Retry("x")
    with pytest.raises(ValueError, match="exactly one"):
        Retry("x", after=1, at=timezone.now())
    with pytest.raises(ValueError, match="timezone-aware"):
        Retry("x", at=timezone.now().replace(tzinfo=None))
    assert Retry(at=timezone.now() + timedelta(hours=1)).at > timezone.now()


@pytest.mark.usefixtures("live_db")
def test_the_claim_refuses_to_start_a_task_before_its_time(user):
    task = submit(user, "fail", retry_backoff=100.0)
    execute(str(task.pk), worker_id=WORKER)
    rows = task.history.count()
    assert execute(str(task.pk), worker_id="celery@stray:9") == "skipped"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.worker_id) == ("queued", 1, "")
    assert task.history.count() == rows, "a stray delivery of a waiting, unpublished task writes nothing"


@pytest.mark.usefixtures("live_db")
def test_a_delivery_ahead_of_its_time_sends_the_task_back_to_wait_for_its_publish(user, monkeypatch):
    """Clock skew: the publisher saw the task due, the worker's clock says it is early. The worker does not start
    it, and marks it unpublished so that it is published again when due (never stuck as published)."""
    task = submit(user, "flaky", request_payload={"succeed_on": 1}, run_at=timezone.now() + timedelta(seconds=60))
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=61))
    assert services.publish_due() == 1
    monkeypatch.setattr(timezone, "now", real_now)
    assert execute(str(task.pk), worker_id=WORKER) == "skipped"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.dispatched_at) == ("queued", 0, None)
    assert "delivered before its start time" in last_row(task).reason
    assert services.publish_due() == 0
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=61))
    assert services.publish_due() == 1
    monkeypatch.setattr(timezone, "now", real_now)


@pytest.mark.parametrize("value", ["abc", "2", -1, 86401, True, None, [1]])
def test_a_bad_retry_backoff_is_refused_by_name(api, value):
    response = api.post("/api/tasks/", {"title": "t", "retry_backoff": value}, format="json")
    if value is None:  # null: the handler's default
        assert response.status_code == 201, response.json()
        return
    assert response.status_code == 400 and "retry_backoff" in response.json(), response.json()
    assert not Task.objects.filter(title="t").exists()


def test_a_retry_backoff_is_taken_per_task_at_submit(api):
    response = api.post("/api/tasks/", {"title": "t", "retry_backoff": 2.5}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["retry_backoff"] == 2.5
    assert Task.objects.get(pk=response.json()["id"]).retry_backoff == 2.5


def test_a_non_finite_retry_backoff_is_refused_by_the_service(user):
    with pytest.raises(Exception, match="retry_backoff") as info:
        submit(user, "echo", retry_backoff=float("nan"))
    assert "finite" in str(info.value)
    assert not Task.objects.exists()


@pytest.mark.slow
def test_a_flaky_task_succeeds_on_its_third_attempt_with_the_waits_in_its_history(cluster):
    cluster.env["TASK_HANDLERS_EXTRA"] = ",".join(f"{k}={v}" for k, v in TEST_HANDLERS.items())
    cluster.env["DISPATCH_DUE_SECONDS"] = "0.25"
    cluster.worker(2)
    cluster.worker(1, HOUSEKEEPING_QUEUE)
    cluster._spawn("beat", ["beat", "-s", str(cluster.tmp_path / "beat-schedule"), "-l", "INFO"])
    (flaky,) = cluster.submit(1, "flaky", max_attempts=3)
    (doomed,) = cluster.submit(1, "give_up", max_attempts=3)
    wait_until_finished([flaky, doomed], cluster, timeout=60)

    task = Task.objects.get(pk=flaky)
    assert (task.state, task.attempt_count, task.error_count, task.result) == ("completed", 3, 2, {"succeeded_on": 3})
    rows = list(task.history.order_by("seq"))
    moves = [r.state_to for r in rows if r.event == "transition"]
    assert moves == ["running", "queued", "running", "queued", "running", "completed"]
    waits = [r for r in rows if (r.state_from, r.state_to) == ("running", "queued")]
    starts = [r for r in rows if r.state_to == "running"]
    assert [w.error_message.splitlines()[-1] for w in waits] == [
        "RuntimeError: flaky: attempt 1 fails",
        "RuntimeError: flaky: attempt 2 fails",
    ]
    for wait, next_start in zip(waits, starts[1:], strict=True):
        assert next_start.created_at >= datetime.fromisoformat(wait.details["next_attempt_at"]), "started early"
    published = [r for r in rows if r.reason.startswith(("published: its start time", "re-dispatched"))]
    assert len(published) == 2, [r.reason for r in rows]

    doomed_task = Task.objects.get(pk=doomed)
    assert (doomed_task.state, doomed_task.attempt_count) == ("failed", 1)
    assert transitions(doomed) == ["queued", "running", "failed"]
