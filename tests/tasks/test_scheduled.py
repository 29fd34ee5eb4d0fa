"""Scheduled tasks: submitted with ``run_at``, a task waits ``queued`` and unpublished in SQL, is published once when
due (crux.dispatch_due), never earlier by the re-dispatch sweep, and can be cancelled before it starts. In-process,
then with a real worker, beat and broker (a flush and a worker restart while it waits)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from persistence import dispatch as broker
from tasks import services
from tasks.audit import Channel, format_timestamp
from tasks.execution import execute
from tasks.models import Task
from tests.conftest import queued_count
from tests.tasks import test_worker

pytest_plugins = ["tests.api_support"]
cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py

WORKER = "celery@test:1"


def schedule(user, seconds: float, **fields):
    fields.setdefault("title", "scheduled")
    run_at = timezone.now() + timedelta(seconds=seconds)
    return services.submit_task(owner=user, actor=user, channel=Channel.API, run_at=run_at, **fields), run_at


def queued_messages() -> int:
    return queued_count(broker.client())


@pytest.mark.usefixtures("live_db")
def test_a_task_scheduled_ahead_waits_unpublished_then_is_published_once_when_due(user):
    published_before = queued_messages()
    task, run_at = schedule(user, 0.5)
    assert (task.state, task.run_after, task.dispatched_at, task.dispatch_count) == ("queued", run_at, None, 0)
    assert f"starts at {format_timestamp(run_at)}" in task.history.get().reason
    assert queued_messages() == published_before, "published at submit"
    assert services.publish_due() == 0
    assert execute(str(task.pk), worker_id=WORKER) == "skipped", "a stray message started it early"

    time.sleep(max(0.0, (run_at - timezone.now()).total_seconds()) + 0.05)
    assert services.publish_due() == 1
    assert services.publish_due() == 0, "published twice for one wait"
    task.refresh_from_db()
    assert task.dispatched_at >= run_at and task.dispatch_count == 1
    assert queued_messages() == published_before + 1
    assert task.history.latest("seq").reason.startswith("published: its start time")
    assert execute(str(task.pk), worker_id=WORKER) == "completed"


@pytest.mark.usefixtures("live_db")
def test_the_redispatch_sweep_never_publishes_a_waiting_task_even_once_it_is_due(user):
    later, _ = schedule(user, 3600)
    due, run_at = schedule(user, 0.2)
    time.sleep(max(0.0, (run_at - timezone.now()).total_seconds()) + 0.05)
    assert broker.redispatch_lost(base_seconds=0) == 0
    assert services.redispatch_stale(base_seconds=0) == 0
    for task in (later, due):
        task.refresh_from_db()
        assert (task.dispatched_at, task.dispatch_count, task.history.count()) == (None, 0, 1)
    # Its publish is crux.dispatch_due's, once, and says why.
    assert services.publish_due() == 1
    due.refresh_from_db()
    assert due.dispatch_count == 1 and due.history.latest("seq").reason.startswith("published: its start time")


@pytest.mark.usefixtures("live_db")
def test_a_run_at_in_the_past_means_now(user):
    task, _ = schedule(user, -3600)
    assert (task.run_after, task.dispatch_count) == (None, 1) and task.dispatched_at is not None
    assert execute(str(task.pk), worker_id=WORKER) == "completed"


@pytest.mark.usefixtures("live_db")
def test_a_scheduled_task_can_be_cancelled_or_deleted_before_it_starts(user):
    cancelled, _ = schedule(user, 0.2)
    deleted, _ = schedule(user, 0.2)
    services.cancel(cancelled.pk, actor=user, channel=Channel.API, reason="not needed")
    services.soft_delete(deleted.pk, user=user, channel=Channel.API, reason="not needed")
    time.sleep(0.3)
    services.publish_due()
    assert Task.objects.get(pk=cancelled.pk).dispatch_count == 0, "a cancelled task was published"
    assert execute(str(deleted.pk), worker_id=WORKER) == "skipped"
    assert Task.objects.get(pk=deleted.pk).state == "cancelled"


def test_a_naive_run_at_is_refused_by_the_service(user):
    with pytest.raises(Exception, match="run_at"):
        services.submit_task(
            owner=user, actor=user, channel=Channel.API, title="t", run_at=timezone.now().replace(tzinfo=None)
        )
    assert not Task.objects.exists()


def test_the_api_takes_run_at_as_an_rfc3339_time(api):
    response = api.post("/api/tasks/", {"title": "later", "run_at": "2099-01-01T09:30:00+02:00"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["state"], body["run_after"]) == ("queued", "2099-01-01T07:30:00Z")
    assert Task.objects.get(pk=body["id"]).dispatched_at is None


@pytest.mark.parametrize(
    "value", ["2099-01-01T09:30:00", "2099-01-01", "tomorrow", "2099-01-01 09:30:00Z", 4102444800, None, True]
)
def test_a_bad_run_at_is_refused_by_name(api, value):
    response = api.post("/api/tasks/", {"title": "later", "run_at": value}, format="json")
    assert response.status_code == 400 and "run_at" in response.json(), response.json()
    assert not Task.objects.exists()
