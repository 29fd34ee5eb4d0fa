"""Re-dispatch of what is known lost only: the broker's epoch marker and the receipts of publishes (real Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from persistence import dispatch
from tasks import services
from tasks.audit import Channel
from tasks.dispatch import PUBLISHED
from tasks.models import Task
from tests.conftest import TEST_QUEUE, queue_keys
from tests.processes import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def submit(user: Any, django_capture_on_commit_callbacks: Any) -> Any:
    """Submit ``count`` tasks; ``published=False`` drops their publish (a crash between commit and publish)."""

    def make(count: int = 1, *, published: bool = True) -> list[Task]:
        with django_capture_on_commit_callbacks(execute=published):
            return [
                services.submit_task(owner=user, actor=user, channel=Channel.API, title=f"t{i}", handler="echo")
                for i in range(count)
            ]

    return make


@pytest.fixture
def sweep(django_capture_on_commit_callbacks: Any) -> Any:
    """One re-dispatch pass, running the publishes it commits."""

    def run(base_seconds: float = 0) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return dispatch.redispatch_lost(base_seconds=base_seconds)

    return run


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def redispatch_reasons(task: Task) -> list[str]:
    return list(task.history.filter(reason__startswith="re-dispatched").values_list("reason", flat=True))


def test_a_published_task_leaves_a_receipt_and_is_confirmed_without_a_second_publish(submit, sweep):
    (task,) = submit()
    assert broker().zscore(dispatch.receipts_key(), str(task.pk)) is not None
    assert sweep() == 0
    task.refresh_from_db()
    assert task.dispatch_epoch == broker().get(dispatch.epoch_key()).decode()
    assert task.dispatch_count == 1 and redispatch_reasons(task) == []


def test_a_backlog_is_never_re_published_however_often_the_sweep_runs(submit, sweep):
    tasks = submit(300)
    published = PUBLISHED._value.get()
    assert [sweep() for _ in range(5)] == [0] * 5
    assert PUBLISHED._value.get() == published
    assert set(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("dispatch_count", flat=True)) == {1}


def test_a_publish_that_never_reached_the_broker_is_re_published_once_after_the_wait(submit, sweep):
    (task,) = submit(published=False)
    assert broker().zscore(dispatch.receipts_key(), str(task.pk)) is None
    assert sweep(base_seconds=3600) == 0, "within the wait: the publish may still be under way"
    assert sweep() == 1
    task.refresh_from_db()
    assert task.dispatch_count == 2
    (reason,) = redispatch_reasons(task)
    assert reason.endswith("never reached the broker")
    assert [sweep() for _ in range(3)] == [0] * 3, "its new publish left a receipt"
    task.refresh_from_db()
    assert task.dispatch_count == 2 and task.dispatch_epoch


def test_when_the_broker_loses_its_epoch_every_queued_task_is_re_published_once_at_once(submit, sweep):
    tasks = submit(20)
    assert sweep() == 0
    old_epoch = broker().get(dispatch.epoch_key()).decode()
    # What FLUSHALL does to the broker's records (this run's keys only: other runs share this Redis).
    broker().delete(dispatch.epoch_key(), dispatch.receipts_key())
    assert sweep(base_seconds=3600) == 20, "known lost: no wait"
    assert [sweep(base_seconds=3600) for _ in range(3)] == [0] * 3
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.dispatch_count == 2 and task.dispatch_epoch not in ("", old_epoch)
        (reason,) = redispatch_reasons(task)
        assert f"epoch {old_epoch} is gone" in reason


def test_an_old_receipt_does_not_confirm_a_later_publish(submit, sweep, django_capture_on_commit_callbacks):
    (task,) = submit()
    assert sweep() == 0
    services.claim(task.pk, worker_id="w:1")
    services.finish_attempt(task.pk, attempt=1, worker_id="w:1", error="boom", permanent=True)
    with django_capture_on_commit_callbacks(execute=False):  # the requeue's publish is lost
        services.recover(task.pk, actor="ops", channel=Channel.COMMAND, reason="again")
    task.refresh_from_db()
    assert task.dispatch_epoch == "", "a new publish waits for its own receipt"
    assert sweep(base_seconds=3600) == 0
    assert sweep() == 1
    assert Task.objects.get(pk=task.pk).dispatch_count == 3


def test_a_task_requeued_or_claimed_meanwhile_is_not_re_published(submit, sweep):
    (task,) = submit(published=False)
    (stale,) = services.unconfirmed_dispatches("no-such-epoch")
    services.claim(task.pk, worker_id="w:1")
    assert services.redispatch(stale[0], reason="test") is False
    assert services.confirm_dispatches(stale, "e") == 0
    assert Task.objects.get(pk=task.pk).dispatch_count == 1


def test_a_broker_without_an_epoch_falls_back_to_the_conservative_age_rule(submit, sweep, settings):
    settings.BROKER_IS_REDIS = False
    (task,) = submit()
    assert sweep(base_seconds=3600) == 0
    assert sweep(base_seconds=0) == 1
    (reason,) = redispatch_reasons(Task.objects.get(pk=task.pk))
    assert "without starting" in reason


# A worker's first step with a message, and nothing after: take it from the queue unacknowledged (kombu records the
# reservation), then wait to be killed.
RESERVE = """
import sys, time
import django
django.setup()
from crux.celery import app
with app.connection_for_read() as conn:
    message = conn.default_channel.basic_get(sys.argv[1], no_ack=False)
    print(message.headers["id"], flush=True)
    time.sleep(600)
"""


@pytest.fixture
def reserved_by_a_killed_worker(submit: Any) -> Iterator[tuple[Task, bytes]]:
    """A published task whose message a process took from the queue and then was SIGKILLed before starting it;
    with that reservation's delivery tag (dropped afterwards if the test left it)."""
    conn = broker()
    conn.delete(*queue_keys())  # this run's queue: the task's message is the only one in it
    (task,) = submit()
    reserver = subprocess.Popen(
        [sys.executable, "-c", RESERVE, TEST_QUEUE], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        taken = reserver.stdout.readline().strip() if reserver.stdout else ""
    finally:
        os.killpg(reserver.pid, signal.SIGKILL)
        reserver.wait(timeout=10)
    assert taken == task.celery_task_id
    (tag,) = [
        tag
        for tag, taken in dispatch.reserved_messages(conn, before=time.time()).items()
        if taken == task.celery_task_id
    ]
    yield task, tag
    dispatch.drop_reservation(conn, tag)


def test_a_message_taken_by_a_worker_killed_before_it_started_the_task_is_re_published(
    reserved_by_a_killed_worker, sweep, settings
):
    task, tag = reserved_by_a_killed_worker
    assert dispatch.queued_count(broker(), TEST_QUEUE) == 0, "the message is only in the reservation"
    assert sweep() == 0, "within a lease of being taken, the worker may still start it"
    settings.TASK_LEASE_SECONDS = 0
    assert sweep() == 1
    task.refresh_from_db()
    assert task.state == "queued" and task.dispatch_count == 2
    (reason,) = redispatch_reasons(task)
    assert f"took its message {task.pk}.1" in reason and "never started it" in reason
    index, hash_key = dispatch.reservation_keys()
    assert broker().hget(hash_key, tag) is None and broker().zscore(index, tag) is None, "the reservation is dropped"
    assert dispatch.queued_count(broker(), TEST_QUEUE) == 1, "the new publish waits in the queue"
    assert [sweep() for _ in range(3)] == [0] * 3


@pytest.mark.parametrize("moved_on", ["cancelled", "published again", "claimed"])
def test_a_reservation_whose_task_moved_on_is_left_alone(reserved_by_a_killed_worker, sweep, settings, moved_on):
    task, tag = reserved_by_a_killed_worker
    if moved_on == "cancelled":
        services.cancel(task.pk, actor="ops", channel=Channel.COMMAND, reason="not needed")
    elif moved_on == "published again":
        ((current, *_),) = services.unconfirmed_dispatches("no-such-epoch")
        assert services.redispatch(current, reason="test")
    else:
        services.claim(task.pk, worker_id="w:1")
    settings.TASK_LEASE_SECONDS = 0
    count = Task.objects.get(pk=task.pk).dispatch_count
    assert [sweep(base_seconds=3600) for _ in range(2)] == [0, 0]
    assert Task.objects.get(pk=task.pk).dispatch_count == count
    assert broker().hget(dispatch.reservation_keys()[1], tag) is not None, "left to the visibility timeout"
