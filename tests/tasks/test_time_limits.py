"""Time limits: the soft limit tells the handler (Celery's own SoftTimeLimitExceeded, or ctx.soft_limit_reached),
the hard limit terminates the attempt and records it (retried or failed by the retry rules); the limits are the
task's, else its handler's, else the settings'. In-process with an injected end, then with a real worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from tasks import services
from tasks.audit import Channel
from tasks.execution import execute
from tasks.models import Task
from tests.tasks import test_worker
from tests.tasks.test_worker import transitions, wait_until_finished

cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py

WORKER = "celery@test:1"
TEST_HANDLERS = {"stuck": "tests.handlers.stuck", "wind_down": "tests.handlers.wind_down"}


@pytest.fixture(autouse=True)
def test_handlers(settings):
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, **TEST_HANDLERS}


def submit(user, handler, **fields):
    fields.setdefault("title", f"{handler} task")
    return services.submit_task(owner=user, actor=user, channel=Channel.API, handler=handler, **fields)


def claim_reason(task: Task) -> str:
    return task.history.filter(state_to="running").latest("seq").reason


def test_limits_are_the_tasks_else_the_handlers_else_the_settings(settings):
    settings.TASK_SOFT_TIME_LIMIT_SECONDS, settings.TASK_TIME_LIMIT_SECONDS = None, None
    assert services.time_limits(Task(handler="echo")) == services.TimeLimits(None, None)
    settings.TASK_SOFT_TIME_LIMIT_SECONDS, settings.TASK_TIME_LIMIT_SECONDS = 5, 50
    assert services.time_limits(Task(handler="echo")) == services.TimeLimits(5.0, 50.0)
    assert services.time_limits(Task(handler="stuck")) == services.TimeLimits(5.0, 1.5)  # @options(time_limit=1.5)
    own = Task(handler="stuck", soft_time_limit=2, time_limit=9)
    assert services.time_limits(own) == services.TimeLimits(2.0, 9.0)
    assert services.time_limits(Task(handler="no_longer_registered")) == services.TimeLimits(5.0, 50.0)


@pytest.mark.usefixtures("live_db")
def test_the_claim_says_the_limits_in_force(user, settings):
    settings.TASK_SOFT_TIME_LIMIT_SECONDS, settings.TASK_TIME_LIMIT_SECONDS = None, 50
    task = submit(user, "echo", request_payload={"message": "hi"}, soft_time_limit=20)
    assert execute(str(task.pk), worker_id=WORKER) == "completed"
    assert claim_reason(task) == "claimed for attempt 1 of 3, time limits soft 20s, hard 50s"
    other = submit(user, "echo", request_payload={"message": "hi"})
    settings.TASK_TIME_LIMIT_SECONDS = None
    execute(str(other.pk), worker_id=WORKER)
    assert claim_reason(other) == "claimed for attempt 1 of 3, no time limits"


@pytest.mark.usefixtures("live_db")
def test_the_soft_limit_is_raised_in_the_handler_which_cleans_up(user):
    def before(signum, frame):
        raise AssertionError("not this one")

    signal.signal(signal.SIGALRM, before)
    try:
        task = submit(user, "wind_down", soft_time_limit=0.3, time_limit=10)
        started = time.monotonic()
        assert execute(str(task.pk), worker_id=WORKER) == "completed"
        assert 0.3 <= time.monotonic() - started < 3
        assert signal.getsignal(signal.SIGALRM) is before, "the previous SIGALRM handler is restored"
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the timer is cancelled"
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    task.refresh_from_db()
    assert task.result == {"stopped": "soft limit"}
    assert task.outputs.get().content == "cleanup after the soft limit (reached: True)"


@pytest.mark.usefixtures("live_db")
def test_a_soft_limit_the_handler_lets_escape_is_an_ordinary_error(user):
    task = submit(user, "wind_down", request_payload={"reraise": True}, soft_time_limit=0.2, max_attempts=2)
    assert execute(str(task.pk), worker_id=WORKER) == "queued"
    task.refresh_from_db()
    assert "SoftTimeLimitExceeded: soft time limit of 0.2s exceeded" in task.last_error
    assert task.error_count == 1 and task.run_after is not None
    assert issubclass(type(_raised_by_the_alarm()), SoftTimeLimitExceeded)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _raised_by_the_alarm() -> BaseException:
    from tasks.execution import soft_time_limit

    try:
        with soft_time_limit(0.05):
            time.sleep(1)
    except BaseException as exc:  # what a handler written for Celery catches
        return exc
    raise AssertionError("no soft time limit raised")


@pytest.mark.usefixtures("live_db")
def test_outside_the_main_thread_a_handler_polls_the_soft_limit(user):
    polled = submit(user, "wind_down", request_payload={"poll": True}, soft_time_limit=0.3)
    unaware = submit(user, "wind_down", request_payload={"for": 0.6}, soft_time_limit=0.2)
    outcomes: list[str] = []

    def run() -> None:
        for task in (polled, unaware):
            outcomes.append(execute(str(task.pk), worker_id=WORKER))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert outcomes == ["completed", "completed"]
    polled.refresh_from_db(), unaware.refresh_from_db()
    assert polled.result == {"stopped": "polled"}
    assert unaware.result == {"stopped": "never"}, "no signal outside the main thread: nothing is raised"


@pytest.mark.usefixtures("live_db")
def test_the_hard_limit_records_the_attempt_takes_the_claim_and_ends_it(user, tmp_path):
    log = tmp_path / "writes.log"
    task = submit(user, "stuck", request_payload={"log": str(log)}, time_limit=0.6, max_attempts=2)
    ended: list[float] = []
    started = time.monotonic()
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: ended.append(time.monotonic())) == "queued"
    assert len(ended) == 1 and 0.6 <= ended[0] - started < 2
    task.refresh_from_db()
    error = "hard time limit of 0.6s exceeded: attempt terminated"
    assert (task.state, task.attempt_count, task.last_error, task.error_count) == ("queued", 1, error, 1)
    retry = task.history.latest("seq")
    assert retry.state_from == "running" and retry.details["error"] == error
    assert claim_reason(task).endswith(", hard 0.6s")
    writes = log.read_text().splitlines()
    assert writes and all(line.startswith("wrote 1 ") for line in writes)
    assert task.processing_time_seconds >= 0.6

    # The last attempt: failed by the same rule, and the handler (still running here) wrote nothing after it.
    time.sleep(max(0.0, (task.run_after - timezone.now()).total_seconds()))  # the handler's backoff: 0.1-0.2 s
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: ended.append(time.monotonic())) == "failed"
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.last_error) == ("failed", 2, error)
    assert transitions(str(task.pk)) == ["queued", "running", "queued", "running", "failed"]
    assert task.current_phase == "attempt 2 stuck"
    count = len(log.read_text().splitlines())
    time.sleep(0.3)
    assert len(log.read_text().splitlines()) == count, "the handler stopped writing"


@pytest.mark.usefixtures("live_db")
def test_an_attempt_that_ends_before_its_hard_limit_is_left_alone(user):
    task = submit(user, "echo", request_payload={"message": "quick"}, time_limit=0.3)
    ended: list[bool] = []
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: ended.append(True)) == "completed"
    time.sleep(0.5)
    task.refresh_from_db()
    assert task.state == "completed" and ended == []


@pytest.mark.slow
def test_a_real_worker_terminates_a_stuck_attempt_records_it_and_runs_other_tasks(cluster, tmp_path):
    cluster.env["TASK_HANDLERS_EXTRA"] += ",stuck=tests.handlers.stuck"
    worker = cluster.worker(1)
    cluster.housekeeping()
    log = tmp_path / "stuck.log"
    [stuck] = cluster.submit(1, "stuck", payload={"log": str(log)}, max_attempts=2)
    others = cluster.submit(3, "record", payload={"log": str(tmp_path / "records.log"), "duration": 0.1})
    wait_until_finished([stuck, *others], cluster, timeout=60)

    task = Task.objects.get(pk=stuck)
    error = "hard time limit of 1.5s exceeded: attempt terminated"  # the handler's @options(time_limit=1.5)
    assert (task.state, task.attempt_count, task.last_error) == ("failed", 2, error), cluster.logs()
    rows = list(task.history.order_by("seq").values_list("event", "state_from", "state_to", "reason"))
    moves = [(state_from, state_to) for event, state_from, state_to, _ in rows if event == "transition"]
    assert moves == [("queued", "running"), ("running", "queued"), ("queued", "running"), ("running", "failed")]
    assert rows[2][3].startswith("handler raised on attempt 1 of 2: next attempt at"), rows
    assert Task.objects.filter(pk__in=others, state="completed").count() == 3
    assert worker.poll() is None, "the worker goes on after terminating an attempt"
    pids = {int(line.split()[2]) for line in log.read_text().splitlines()}
    assert len(pids) == 2, "each attempt ran in a child of its own: the first one was ended"
    deadline = time.monotonic() + 5  # the last one ends itself right after recording its outcome
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
