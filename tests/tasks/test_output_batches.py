"""A handler's outputs are written with the attempt's next write, or by the heartbeat once they have waited.

``TaskContext.output`` checks an output (its fields, the claim as committed) at once and leaves its INSERT
waiting: the next progress or metrics write, or the outcome, commits it in its own transaction; the heartbeat
thread writes what has waited ``TASK_OUTPUT_FLUSH_SECONDS``; ``OUTPUT_BATCH_MAX`` outputs are written at once.
A waiting output whose attempt lost its claim is never written. Everything runs in-process against the real
database (the heartbeat thread on a connection of its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import ClaimLost, InvalidTaskData
from tasks.execution import OUTPUT_BATCH_CHARS, OUTPUT_BATCH_MAX, execute
from tasks.models import Task, TaskOutput

pytestmark = pytest.mark.usefixtures("live_db")

WORKER = "celery@test:1"
SUCCESSOR = "celery@test:2"


def outputs_of(task_id: Any) -> list[str]:
    """The task's outputs as committed, in the order they are read (by id)."""
    return list(TaskOutput.objects.filter(task_id=task_id).order_by("pk").values_list("content", flat=True))


def wait_for_output(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Appends an output, then waits (up to 5 s) until a reader sees it committed: how long that took."""
    started = time.monotonic()
    ctx.output("log", "waiting line")
    while not outputs_of(ctx.task_id) and time.monotonic() - started < 5:
        time.sleep(0.01)
    return {"seen_after": time.monotonic() - started, "seen": outputs_of(ctx.task_id)}


def with_progress_and_metrics(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Appends an output before a progress write and one before a metrics write: what a reader saw after each."""
    ctx.output("log", "before progress")
    ctx.progress(0.5, phase="half")
    after_progress = outputs_of(ctx.task_id)
    ctx.output("log", "before metrics")
    ctx.metrics(iterations=1)
    return {"after_progress": after_progress, "after_metrics": outputs_of(ctx.task_id)}


def many_lines(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Appends ``lines`` outputs, each padded to ``size`` characters if given; what a reader saw after the last."""
    for i in range(int(payload["lines"])):
        ctx.output("stdout", f"line {i}".ljust(int(payload.get("size", 0)), "."))
    return {"seen": len(outputs_of(ctx.task_id))}


def output_then_taken_over(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Appends an output; its attempt is then taken over (recovered past its lease and claimed by another worker);
    with ``linger``, it then waits that long (for the heartbeat) instead of returning at once."""
    ctx.output("log", "appended before the takeover")
    Task.objects.filter(pk=ctx.task_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.recover_orphans()
    services.claim(ctx.task_id, worker_id=SUCCESSOR)
    deadline = time.monotonic() + float(payload.get("linger", 0))
    while time.monotonic() < deadline and not ctx.claim_lost.is_set():
        time.sleep(0.01)
    return {"should": "be discarded"}


def output_then_stuck(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.output("log", "before the hard limit")
    time.sleep(3)
    return {"should": "never return"}


def bad_output(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        ctx.output(payload["output_type"], "x", **payload["meta"])
    except InvalidTaskData as exc:
        return {"refused": sorted(exc.errors)}
    return {"refused": []}


HANDLERS = (
    wait_for_output,
    with_progress_and_metrics,
    many_lines,
    output_then_taken_over,
    output_then_stuck,
    bad_output,
)


@pytest.fixture(autouse=True)
def handlers(settings: Any) -> None:
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, **{h.__name__: f"{__name__}.{h.__name__}" for h in HANDLERS}}
    settings.TASK_OUTPUT_FLUSH_SECONDS = 30.0  # no write by the heartbeat unless a test asks for one


def submit(user: Any, handler: str, **fields: Any) -> Task:
    return services.submit_task(owner=user, actor=user, channel=Channel.API, title=handler, handler=handler, **fields)


@contextmanager
def counted_commits() -> Iterator[list[int]]:
    """The commits of this thread's connection (the handler's and the attempt's; the heartbeat has its own)."""
    commits: list[int] = []
    real_commit = connection.commit

    def commit() -> None:
        commits.append(1)
        real_commit()

    with mock.patch.object(connection, "commit", side_effect=commit):
        yield commits


def run(task: Task, on_lease_lost: Callable[[], None] = lambda: None) -> tuple[str, Task]:
    outcome = execute(str(task.pk), worker_id=WORKER, on_lease_lost=on_lease_lost)
    task.refresh_from_db()
    return outcome, task


def test_the_heartbeat_writes_an_output_that_waited_the_flush_period(user, settings):
    settings.TASK_OUTPUT_FLUSH_SECONDS = 0.3
    outcome, task = run(submit(user, "wait_for_output"))
    assert outcome == "completed"
    # Seen by a reader while the handler still ran: written by the heartbeat, not by the outcome.
    assert task.result["seen"] == ["waiting line"]
    assert 0.3 <= task.result["seen_after"] < 3, task.result
    assert outputs_of(task.pk) == ["waiting line"]


def test_with_no_flush_period_each_output_is_written_at_once(user, settings):
    settings.TASK_OUTPUT_FLUSH_SECONDS = 0
    task = submit(user, "wait_for_output")
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed" and task.result["seen"] == ["waiting line"]
    assert task.result["seen_after"] < 0.3, task.result
    assert len(commits) == 3  # the claim, the output in a transaction of its own, the outcome


def test_outputs_commit_with_the_next_progress_or_metrics_write(user):
    task = submit(user, "with_progress_and_metrics")
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed"
    assert task.result == {
        "after_progress": ["before progress"],
        "after_metrics": ["before progress", "before metrics"],
    }
    assert (task.progress, task.current_phase, task.iterations) == (1.0, "half", 1)
    assert len(commits) == 4  # the claim, the progress with one output, the metrics with the other, the outcome


def test_a_short_tasks_output_commits_with_its_outcome(user):
    task = submit(user, "echo", request_payload={"message": "hi"})
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed" and outputs_of(task.pk) == ["hi"]
    assert len(commits) == 2  # the claim, the outcome with the output
    assert task.outputs.get().created_at < task.completed_at  # stamped when appended, not when written


def test_many_outputs_are_written_in_batches_in_their_order(user):
    lines = 2 * OUTPUT_BATCH_MAX + 50
    task = submit(user, "many_lines", request_payload={"lines": lines})
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed"
    assert outputs_of(task.pk) == [f"line {i}" for i in range(lines)]
    assert len(commits) == 4  # the claim, two full batches, the outcome with the last 50


def test_outputs_of_a_million_characters_are_written_at_once(user):
    task = submit(user, "many_lines", request_payload={"lines": 3, "size": OUTPUT_BATCH_CHARS // 2 - 1})
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed"
    # The third line took the waiting ones past the size: all three were written before the handler returned.
    assert task.result == {"seen": 3}
    assert len(commits) == 3  # the claim, the three lines, the outcome with none


def test_a_waiting_output_of_an_attempt_that_lost_its_claim_is_never_written(user):
    outcome, task = run(submit(user, "output_then_taken_over"))
    assert outcome == "discarded"
    assert (task.state, task.attempt_count, task.worker_id) == ("running", 2, SUCCESSOR)
    assert outputs_of(task.pk) == []


def test_the_heartbeat_finding_the_claim_lost_writes_nothing_and_stops_the_attempt(user, settings):
    settings.TASK_OUTPUT_FLUSH_SECONDS = 0.2
    stopped = threading.Event()
    outcome, task = run(submit(user, "output_then_taken_over", request_payload={"linger": 5}), stopped.set)
    assert stopped.is_set(), "the heartbeat did not stop the attempt"
    assert outcome == "discarded"
    assert (task.state, task.attempt_count, task.worker_id) == ("running", 2, SUCCESSOR)
    assert outputs_of(task.pk) == []


def test_the_hard_limit_writes_the_waiting_outputs_with_the_attempts_end(user):
    ended = threading.Event()
    task = submit(user, "output_then_stuck", time_limit=0.5, max_attempts=1)
    outcome, task = run(task, ended.set)
    assert ended.is_set() and outcome == "failed"
    assert task.state == "failed" and "hard time limit of 0.5s exceeded" in task.last_error
    assert outputs_of(task.pk) == ["before the hard limit"]


@pytest.mark.parametrize(
    ("output_type", "meta", "field"),
    [("log", {"file_size": -1}, "file_size"), ("bogus", {}, "output_type"), ("log", {"colour": "red"}, "colour")],
)
def test_an_invalid_output_is_refused_with_its_field_when_appended_and_never_waits(user, output_type, meta, field):
    task = submit(user, "bad_output", request_payload={"output_type": output_type, "meta": meta})
    with counted_commits() as commits:
        outcome, task = run(task)
    assert outcome == "completed" and task.result == {"refused": [field]}
    assert outputs_of(task.pk) == [] and len(commits) == 2


def test_an_output_appended_after_the_takeover_is_refused_at_once(user):
    task = submit(user, "echo")
    services.claim(task.pk, worker_id=WORKER)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.recover_orphans()
    with pytest.raises(ClaimLost, match="no longer holds its claim"):
        services.prepare_output(task.pk, "stdout", "late", attempt=1, worker_id=WORKER)


def test_a_failed_write_by_the_heartbeat_keeps_the_outputs_and_tries_again_a_quarter_lease_later(user, settings):
    settings.TASK_OUTPUT_FLUSH_SECONDS = 0.2
    settings.TASK_LEASE_SECONDS = 2.0  # the heartbeat's period, and its retry: 0.5 s
    real_write = services.record_outputs
    calls: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> None:
        calls.append(len(args[1]))
        if len(calls) == 1:
            raise OperationalError("database is locked")
        real_write(*args, **kwargs)

    with mock.patch.object(services, "record_outputs", side_effect=failing_once):
        outcome, task = run(submit(user, "wait_for_output"))
    assert outcome == "completed" and task.result["seen"] == ["waiting line"]
    assert calls == [1, 1], calls  # the same output, once more
    assert 0.2 + 0.5 <= task.result["seen_after"] < 4, task.result
    assert outputs_of(task.pk) == ["waiting line"]
