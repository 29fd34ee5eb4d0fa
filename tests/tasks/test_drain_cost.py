"""What a drained task costs, with every guarantee kept (issue 16).

- Celery's result row of a task execution that fails or waits for a retry (FAILURE, RETRY) is written once, in the
  outcome's transaction, not in a commit of its own; a completion writes none. While the attempt runs, Celery's
  tools read STARTED from the task, and once it completed, SUCCESS.
- A task read under its row lock (``services.locked_task``) is saved without a second locked read and without a
  savepoint, only when that read is provably the same transaction's; every other save reads the row again.
- The claim reads the task before its transaction and saves it as a compare-and-set on that read
  (``services.write_task``); the outcome is a compare-and-set on the task as the claim committed it, with what the
  attempt wrote since, and reads nothing. A write that another overtook writes nothing and is made again under the
  row lock.
- The metrics row is a plain UPDATE or INSERT under the task's lock, its text redacted.

Counting: commits are counted with a spy on the connection's ``commit`` (the real commit runs), statements with
Django's ``execute_wrapper``; the task runs through Celery's own tracer, as a worker's pool process runs it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from unittest import mock

import pytest
from celery import states
from celery.app.task import Context
from celery.app.trace import build_tracer
from celery.result import AsyncResult
from django.db import connection, transaction
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django_celery_results.models import TaskResult

from crux.celery import app
from crux.locate import locate
from persistence import mirror
from tasks import services
from tasks.audit import Channel, audited
from tasks.dispatch import EXECUTE_TASK
from tasks.exceptions import IllegalTransition, InvalidTaskData, TaskChanged
from tasks.execution import Heartbeat, HeartbeatThread, execute
from tasks.models import CeleryResult, Task, TaskHistory
from tasks.redaction import REDACTED
from tasks.selectors import verify_audit_chains
from tasks.services.base import locked_task, unlocked_task, validate_task, write_task
from tasks.services.recovery import current_dispatches, redispatch
from tasks.tasks import AttemptFailed
from tests.tasks import test_worker
from tests.tasks.test_queues import submit as submit_to_cluster
from tests.tasks.test_worker import wait_until_finished

pytestmark = pytest.mark.usefixtures("live_db")

HOSTNAME = "w1@drain-test"
WORKER = "celery@test:1"


@dataclass
class Counts:
    """What the database saw: commits, statements by kind, writes outside any transaction, task-row reads inside
    transactions (the locked reads of the writes, not what a reader does after them)."""

    commits: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    autocommit_writes: int = 0
    task_reads: int = 0
    task_selects: int = 0  # every read of the task row, in a transaction or not


@contextmanager
def counted() -> Iterator[Counts]:
    counts = Counts()
    real_commit = connection.commit

    def commit() -> None:
        counts.commits += 1
        real_commit()

    def execute(run: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = sql.split(None, 1)[0].upper()
        counts.kinds[kind] += 1
        if kind in ("INSERT", "UPDATE", "DELETE") and not connection.in_atomic_block:
            counts.autocommit_writes += 1
        if kind == "SELECT" and 'FROM "tasks_task"' in sql:
            counts.task_selects += 1
            counts.task_reads += connection.in_atomic_block
        return run(sql, params, many, context)

    with mock.patch.object(connection, "commit", side_effect=commit), connection.execute_wrapper(execute):
        yield counts


def submit(user: Any, handler: str = "echo", **fields: Any) -> Task:
    fields.setdefault("title", f"{handler} task")
    return services.submit_task(owner=user, actor=user, channel=Channel.API, handler=handler, **fields)


def trace(task: Task, celery_id: str | None = None) -> Any:
    """One delivery of ``task``'s message (by default, of its latest publish) through Celery's tracer with a worker's
    request (not eager)."""
    celery_id = celery_id or task.celery_task_id
    tracer = build_tracer(EXECUTE_TASK, app.tasks[EXECUTE_TASK], app=app, hostname=HOSTNAME, eager=False)
    request = {
        "id": celery_id,
        "task": EXECUTE_TASK,
        "hostname": HOSTNAME,
        "argsrepr": repr((str(task.pk),)),
        "kwargsrepr": "{}",
        "delivery_info": {"routing_key": "celery", "priority": 5, "redelivered": False},
        "is_eager": False,
    }
    return tracer(celery_id, (str(task.pk),), {}, request)


@pytest.fixture
def handlers(settings: Any) -> None:
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, "flaky": "tests.handlers.flaky"}


def test_an_echo_task_commits_twice_and_celery_reads_its_success_from_the_task_with_no_row(user):
    task = submit(user, request_payload={"message": "hi"})
    with counted() as counts:
        trace(task)
    task.refresh_from_db()
    assert task.state == "completed"
    # The claim, the outcome (echo's output, its metrics in its UPDATE).
    assert counts.commits == 2 and counts.autocommit_writes == 0, counts
    assert counts.kinds["SAVEPOINT"] == 0, counts
    # history x2, the output; the claim's read, the claim's and the outcome's UPDATEs, the output's claim check
    # (the run time is observed from the ended task)
    assert counts.kinds["INSERT"] == 3 and counts.kinds["SELECT"] + counts.kinds["UPDATE"] == 4, counts
    # No read in a transaction: the claim reads the task before its own, the output's claim check is a read before
    # the outcome's (which checks it again in its compare-and-set), the outcome reads nothing.
    assert (counts.task_reads, counts.task_selects) == (0, 2), counts
    assert task.outputs.get().created_at < task.completed_at
    assert [h.state_to for h in TaskHistory.objects.filter(task=task).order_by("seq")] == [
        "queued",
        "running",
        "completed",
    ]
    assert not TaskResult.objects.filter(task_id=task.celery_task_id).exists(), "it would repeat the task row"
    result = AsyncResult(task.celery_task_id, app=app)
    assert (result.state, result.result, result.worker) == (states.SUCCESS, "completed", HOSTNAME)
    assert result.date_done == task.completed_at and result.get(timeout=1) == "completed"
    assert app.backend.get_task_meta(task.celery_task_id)["date_started"] == task.started_at
    # Its arguments are the task id its Celery id names, derived as for a stored row.
    assert (result.args, result.kwargs) == (repr((str(task.pk),)), "{}")


def test_a_completion_read_from_the_task_has_what_a_stored_success_row_gives_celery(user):
    """The view derived from a completed task is the one the backend gives of the same delivery's SUCCESS row
    stored as Celery stores it (a completion's row as it was written before it was derived)."""
    task = submit(user)
    trace(task)
    task.refresh_from_db()
    derived = app.backend.get_task_meta(task.celery_task_id)
    request = Context(
        id=task.celery_task_id,
        task=EXECUTE_TASK,
        hostname=HOSTNAME,
        argsrepr=repr((str(task.pk),)),
        kwargsrepr="{}",
        crux_started_at=task.started_at,
    )
    app.backend.store_result(task.celery_task_id, "completed", states.SUCCESS, request=request)
    stored = app.backend.get_task_meta(task.celery_task_id)
    assert TaskResult.objects.filter(task_id=task.celery_task_id).exists()  # it is a stored row's view
    assert derived.pop("date_started") == task.started_at  # a stored row's is in its column, not in Celery's view
    # The time of the row's write, or the task's completion.
    assert abs(stored.pop("date_done") - derived.pop("date_done")).total_seconds() < 1
    assert derived == stored


def look_at_result_row(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A handler that returns what Celery's tools see of its own delivery while it runs (outside any transaction):
    the result rows, ``AsyncResult``'s state and result, and the backend's start time."""
    task = Task.objects.get(pk=ctx.task_id)
    seen = AsyncResult(task.celery_task_id, app=app)
    return {
        "rows": TaskResult.objects.filter(task_id=task.celery_task_id).count(),
        "state": seen.state,
        "meta": seen.result,
        "started": app.backend.get_task_meta(task.celery_task_id)["date_started"] == task.started_at,
    }


def test_a_running_delivery_is_started_for_celery_read_from_the_task_with_no_row(user, settings):
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, "look": f"{__name__}.look_at_result_row"}
    task = submit(user, handler="look")
    trace(task)
    task.refresh_from_db()
    # What the handler saw while it ran: no row, and STARTED with the meta Celery's track_started writes.
    assert task.result == {
        "rows": 0,
        "state": "STARTED",
        "meta": {"pid": os.getpid(), "hostname": HOSTNAME},
        "started": True,
    }
    assert not TaskResult.objects.filter(task_id=task.celery_task_id).exists()
    assert app.backend.get_task_meta(task.celery_task_id)["date_started"] == task.started_at


@pytest.mark.parametrize("delivery", ["another publish", "not running", "no such task", "not a task id"])
def test_a_delivery_with_no_row_that_is_not_running_its_attempt_is_pending(user, delivery):
    task = submit(user)
    services.claim(task.pk, worker_id=f"{HOSTNAME}:1:2")
    task.refresh_from_db()
    assert AsyncResult(task.celery_task_id, app=app).state == states.STARTED  # the case each variant departs from
    celery_id = {
        "another publish": f"{task.pk}.{task.dispatch_count + 1}",
        "no such task": f"{uuid.uuid4()}.1",
        "not a task id": "celery-own-id",
        "not running": task.celery_task_id,
    }[delivery]
    if delivery == "not running":
        services.cancel(task.pk, actor=user, channel=Channel.API, reason="stop")
    assert AsyncResult(celery_id, app=app).state == states.PENDING


@pytest.mark.parametrize("delivery", ["an earlier publish", "a later publish", "no such task", "not a task id"])
def test_only_the_publish_that_completed_its_task_reads_success_from_it(user, delivery):
    task = submit(user)
    trace(task)
    task.refresh_from_db()
    assert AsyncResult(task.celery_task_id, app=app).state == states.SUCCESS  # the case each variant departs from
    celery_id = {
        "an earlier publish": f"{task.pk}.{task.dispatch_count - 1}",
        "a later publish": f"{task.pk}.{task.dispatch_count + 1}",
        "no such task": f"{uuid.uuid4()}.{task.dispatch_count}",
        "not a task id": f"{task.pk}",
    }[delivery]
    assert AsyncResult(celery_id, app=app).state == states.PENDING


def test_locate_names_celerys_view_of_a_completion_read_from_the_task_and_of_a_failure_from_its_row(user):
    done, failed = submit(user), submit(user, handler="fail", request_payload={"message": "no"}, max_attempts=1)
    for task in (done, failed):
        trace(task)
        task.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        found = locate(done.pk)
    assert found.celery_result == {"status": "SUCCESS", "date_done": done.completed_at, "worker": HOSTNAME}
    task_table = re.compile(rf'FROM "?{Task._meta.db_table}"?\s', re.IGNORECASE)
    task_reads = [query["sql"] for query in queries.captured_queries if task_table.search(query["sql"])]
    assert len(task_reads) == 2, task_reads  # locate's read of the row, and Celery's view of the attempt it holds
    assert found.task is not None and "dispatch_count" not in found.task
    assert locate(failed.pk).celery_result == {
        "status": "FAILURE",
        "date_done": TaskResult.objects.get(task_id=failed.celery_task_id).date_done,
        "worker": HOSTNAME,
    }


@pytest.mark.parametrize("first", ["the stale message", "the current publish"])
def test_a_publish_that_completed_its_task_is_its_success_whichever_message_claimed_it_first(user, first):
    """The sweep re-publishes a task whose message it thinks lost; the first message may still arrive, and claim
    the task before the new one. Celery's view names the publish whose delivery ran it, and the other's skip."""
    task = submit(user)
    stale = task.celery_task_id
    lost = current_dispatches([stale])[stale]
    assert redispatch(lost, reason="its message seems lost")
    task.refresh_from_db()
    current = task.celery_task_id
    assert current != stale
    ran, skipped = (stale, current) if first == "the stale message" else (current, stale)
    trace(task, ran)
    assert Task.objects.get(pk=task.pk).state == "completed"
    assert AsyncResult(skipped, app=app).state == states.PENDING, "it has not arrived yet"
    assert (AsyncResult(ran, app=app).state, AsyncResult(ran, app=app).result) == (states.SUCCESS, "completed")
    assert TaskResult.objects.filter(task_id=ran).exists() == (ran == stale), "only the current publish is derived"
    trace(task, skipped)
    assert AsyncResult(skipped, app=app).result.startswith("skipped")
    assert AsyncResult(ran, app=app).result == "completed"


def test_celerys_result_rows_in_the_admin_say_what_they_hold_link_to_their_task_and_are_never_edited(
    user, client, django_user_model
):
    done, failed = submit(user), submit(user, handler="fail", request_payload={"message": "no"}, max_attempts=1)
    for task in (done, failed):
        trace(task)
    row = TaskResult.objects.get(task_id=failed.celery_task_id)
    foreign = TaskResult.objects.create(task_id=str(uuid.uuid4()), task_name="another.app.job", status="FAILURE")
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123"))
    changelist = reverse("admin:django_celery_results_taskresult_changelist")
    page = client.get(changelist).content.decode()
    assert "A delivery that completes its task writes no row" in page
    assert row.task_id in page and foreign.task_id in page and done.celery_task_id not in page
    links = re.findall(r'href="(/admin/tasks/task/[^/"]+/change/)"', page)
    assert links == [reverse("admin:tasks_task_change", args=[failed.pk])], "none for another app's job"

    assert client.get(reverse("admin:django_celery_results_taskresult_add")).status_code == 403
    change = reverse("admin:django_celery_results_taskresult_change", args=[row.pk])
    assert client.get(change).status_code == 200, "staff read a row"
    assert client.post(change, {"status": "SUCCESS", "result": '"completed"'}).status_code == 403
    assert client.post(reverse("admin:django_celery_results_taskresult_delete", args=[row.pk]), {"post": "yes"}
                       ).status_code == 403  # fmt: skip
    bulk = {"action": "delete_selected", "_selected_action": [row.pk, foreign.pk], "post": "yes"}
    assert "delete_selected" not in page and client.post(changelist, bulk).status_code == 200
    assert TaskResult.objects.get(pk=row.pk).status == "FAILURE" and TaskResult.objects.count() == 2
    with pytest.raises(NoReverseMatch):
        reverse("admin:django_celery_results_groupresult_changelist")


def test_a_failure_is_a_failure_row_written_with_the_outcome(user):
    task = submit(user, handler="fail", request_payload={"message": "no luck"}, max_attempts=1)
    with counted() as counts:
        trace(task)
    task.refresh_from_db()
    assert task.state == "failed"
    assert counts.commits == 2 and counts.autocommit_writes == 0, counts  # claim, outcome with the stderr output
    assert task.outputs.get().output_type == "stderr"
    row = TaskResult.objects.get(task_id=task.celery_task_id)
    assert row.status == "FAILURE" and "AttemptFailed" in row.result and "no luck" in row.result
    assert row.traceback.startswith("tasks.tasks.AttemptFailed: ") and "no luck" in row.traceback
    result = AsyncResult(task.celery_task_id, app=app)
    assert result.state == states.FAILURE and isinstance(result.result, AttemptFailed)
    assert "no luck" in str(result.result)


def test_a_retry_wait_is_a_retry_row_written_with_the_outcome(user, handlers):
    task = submit(user, handler="flaky", max_attempts=3, retry_backoff=60)
    with counted() as counts:
        trace(task)
    task.refresh_from_db()
    assert (task.state, task.attempt_count) == ("queued", 1) and task.run_after is not None
    assert counts.autocommit_writes == 0, counts
    row = TaskResult.objects.get(task_id=task.celery_task_id)
    assert row.status == "RETRY" and "flaky: attempt 1 fails" in row.result


def test_a_duplicate_delivery_gets_celerys_own_success_row_and_no_started_row(user):
    task = submit(user)
    services.cancel(task.pk, actor=user, channel=Channel.API, reason="not needed")
    trace(task)
    row = TaskResult.objects.get(task_id=task.celery_task_id)
    assert row.status == "SUCCESS" and json.loads(row.result).startswith("skipped") and row.date_started is None
    assert Task.objects.get(pk=task.pk).history.count() == 2


def test_an_eager_run_stores_no_result_row(user):
    task = submit(user)
    assert app.tasks[EXECUTE_TASK].apply(args=(str(task.pk),), task_id=task.celery_task_id).get() == "completed"
    assert not TaskResult.objects.filter(task_id=task.celery_task_id).exists()


# One locked read per state change.


def _reads(change: Any) -> int:
    with counted() as counts:
        change()
    return counts.task_reads


def _cancel(task: Task, actor: Any) -> Task:
    return services.cancel(task.pk, actor=actor, channel=Channel.API, reason="changed meanwhile")


def test_a_state_change_reads_the_task_once_and_writes_no_savepoint(user):
    task = submit(user)
    with counted() as counts:
        _cancel(task, user)
    assert counts.task_reads == 1 and counts.kinds["SAVEPOINT"] == 0, counts
    assert [h.state_to for h in TaskHistory.objects.filter(task=task).order_by("seq")] == ["queued", "cancelled"]


def test_a_locked_read_of_an_earlier_transaction_is_read_again(user):
    task = submit(user)
    with transaction.atomic():
        stale = locked_task(task.pk)
    _cancel(task, user)
    stale.state = "running"
    with pytest.raises(IllegalTransition), transaction.atomic(), audited(user, channel=Channel.API, reason="late"):
        stale.save()  # read again: the task is cancelled now, and cancelled -> running is refused
    assert Task.objects.get(pk=task.pk).state == "cancelled"


def test_a_locked_read_in_a_rolled_back_savepoint_is_read_again(user):
    task = submit(user)
    with transaction.atomic():
        try:
            with transaction.atomic():
                read = locked_task(task.pk)
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        read.title = "renamed"
        with audited(user, channel=Channel.API, reason="rename"), counted() as counts:
            read.save()
    assert counts.task_reads == 1 and counts.kinds["SAVEPOINT"] == 1, counts  # read again, in a savepoint


def test_a_locked_read_is_read_again_after_another_save_of_the_task(user):
    task = submit(user)
    with transaction.atomic():
        first = locked_task(task.pk)
        second = locked_task(task.pk)
        second.title = "second"
        with audited(user, channel=Channel.API, reason="second"):
            second.save()
        first.description = "first"
        with audited(user, channel=Channel.API, reason="first"), counted() as counts:
            first.save()
    assert counts.task_reads == 1, counts
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    assert [row.seq for row in rows] == [1, 2, 3]
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"], "chained to the row before it"
    # Diffed against the row as the second save left it (its instance still holds the old title).
    assert rows[2].details["changes"] == {"title": ["second", "echo task"], "description": ["", "first"]}


def test_a_kept_read_serves_one_save_only(user):
    task = submit(user)
    with transaction.atomic():
        read = locked_task(task.pk)
        read.title = "once"
        with audited(user, channel=Channel.API, reason="once"), counted() as first:
            read.save()
        read.title = "twice"
        with audited(user, channel=Channel.API, reason="twice"), counted() as second:
            read.save()
    assert (first.task_reads, second.task_reads) == (0, 1)
    assert [row.seq for row in TaskHistory.objects.filter(task=task).order_by("seq")] == [1, 2, 3]


# The worker's writes: a compare-and-set on a read taken without the row lock.


def _in_threads(*works: Callable[[], Any]) -> None:
    """Each of ``works`` on a thread and a database connection of its own, at the same time; returns once all
    have committed (concurrent writers)."""
    failures: list[BaseException] = []

    def run(work: Callable[[], Any]) -> None:
        try:
            work()
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads) and not failures, failures


def _states(task: Task) -> list[str]:
    return [h.state_to for h in TaskHistory.objects.filter(task=task).order_by("seq")]


def test_the_claim_and_the_outcome_read_the_task_before_their_transactions(user):
    task = submit(user)
    with counted() as counts:
        services.claim(task.pk, worker_id=WORKER)
        services.finish_attempt(task.pk, attempt=1, worker_id=WORKER, result={})
    # No read inside either transaction: its first statement is the UPDATE, where SQLite's write lock is taken.
    assert (counts.task_reads, counts.commits, counts.kinds["SELECT"]) == (0, 2, 2), counts
    assert _states(task) == ["queued", "running", "completed"]
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"]


def test_an_outcome_writes_over_the_claim_and_the_attempts_own_writes_without_reading_the_task(user):
    """The outcome is a compare-and-set on the task as its claim committed it, with what the attempt wrote since
    (progress, phase, figures) set on it: the task is read once, by the claim, and the row, its mirror entry and
    its history are what a read before the outcome gave."""
    task = submit(user, handler="agent_demo", request_payload={"max_iterations": 2, "converge_after": 2, "delay": 0})
    with counted() as counts:
        trace(task)
    row = Task.objects.get(pk=task.pk)
    assert (row.state, row.progress, row.current_phase) == ("completed", 1.0, "done")
    assert (row.iterations, row.stop_reason, row.converged, row.prompt_tokens > 0) == (2, "evaluator_stop", True, True)
    assert row.processing_time_seconds is not None and row.lease_expires_at is None
    outputs, progress_reports = row.outputs.count(), 3
    # The claim's read, each output's claim check, the mirror's read after each progress report: none is the outcome's.
    assert (outputs, counts.task_selects) == (3, 1 + outputs + progress_reports), counts
    assert mirror.sync(mirror.client(), [mirror.snapshot_of(row)], write=False) == "0", "the mirror holds the row"
    assert _states(task) == ["queued", "running", "completed"]
    completed = TaskHistory.objects.get(task=task, seq=3)
    assert set(completed.details["changes"]) == {"result", "completed_at"}, completed.details
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"]


def edit_midway(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A handler whose task someone else edits while it runs, which then reports its progress."""
    services.update_task(ctx.task_id, actor="ops:test", channel=Channel.COMMAND, reason="meanwhile", description="new")
    ctx.progress(0.5, phase="after the edit")
    return {"edited": True}


def test_an_outcome_after_another_write_during_the_attempt_is_made_on_the_task_read_under_its_lock(user, settings):
    settings.TASK_HANDLERS = {**settings.TASK_HANDLERS, "edit_midway": f"{__name__}.edit_midway"}
    task = submit(user, handler="edit_midway")
    with counted() as counts:
        trace(task)
    row = Task.objects.get(pk=task.pk)
    assert (row.state, row.description, row.current_phase, row.result) == (
        "completed",
        "new",
        "after the edit",
        {"edited": True},
    )
    # The claim's read, the edit's locked read, the mirror's after the progress report, then the outcome's locked
    # read: its compare-and-set on the claim's values found the version moved.
    assert (counts.task_selects, counts.task_reads) == (4, 2), counts
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    assert [(r.event, r.state_to) for r in rows] == [
        ("created", "queued"),
        ("transition", "running"),
        ("edit", "running"),
        ("transition", "completed"),
    ]
    assert "description" not in rows[3].details["changes"], "diffed against the edited row"
    assert mirror.sync(mirror.client(), [mirror.snapshot_of(row)], write=False) == "0"
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"]


def test_a_save_of_a_read_another_write_overtook_writes_nothing(user):
    task = submit(user)
    read = unlocked_task(task.pk)
    _cancel(task, user)
    read.title = "late"
    with pytest.raises(TaskChanged), transaction.atomic(), audited(user, channel=Channel.API, reason="late"):
        read.save()
    row = Task.objects.get(pk=task.pk)
    assert (row.state, row.title, row.history_count) == ("cancelled", "echo task", 2)
    assert _states(task) == ["queued", "cancelled"]


def test_a_write_overtaken_between_its_read_and_its_save_is_made_again_under_the_row_lock(user):
    task = submit(user)
    versions: list[int] = []

    def rename(current: Task) -> Task:
        versions.append(current.history_count)
        if len(versions) == 1:
            _in_threads(
                lambda: services.update_task(
                    task.pk, actor=user, channel=Channel.API, reason="theirs", description="theirs"
                )
            )
        current.title = "mine"
        with audited(user, channel=Channel.API, reason="mine"):
            current.save()
        return current

    write_task(task.pk, rename)
    assert versions == [1, 2], "read without the lock, then again under it once the first save found it changed"
    row = Task.objects.get(pk=task.pk)
    assert (row.title, row.description, row.history_count) == ("mine", "theirs", 3)
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    assert [r.details["changes"] for r in rows[1:]] == [
        {"description": ["", "theirs"]},
        {"title": ["echo task", "mine"]},
    ]
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"]


def test_a_save_of_an_unlocked_read_keeps_what_others_wrote_to_the_fields_it_leaves(user):
    task = submit(user)
    read = unlocked_task(task.pk)
    Task.objects.filter(pk=task.pk).update(dispatch_epoch="confirmed-meanwhile")  # untracked: the version stays
    read.title = "renamed"
    with transaction.atomic(), audited(user, channel=Channel.API, reason="rename"):
        read.save()
    row = Task.objects.get(pk=task.pk)
    assert (row.title, row.dispatch_epoch, row.history_count) == ("renamed", "confirmed-meanwhile", 2)


@pytest.mark.parametrize("read", [unlocked_task, locked_task], ids=["unlocked", "locked"])
def test_a_change_checks_the_fields_it_changed_and_leaves_the_stored_ones(user, read):
    """``validate_task`` of a task read for a change: a bad value set is refused by its field, nothing written; a
    stored value is not checked again (what is stored passed its checks when written)."""
    task = submit(user)
    with connection.cursor() as cursor:  # a stored value its field's checks refuse (the database takes it)
        cursor.execute(
            "UPDATE tasks_task SET priority = 99 WHERE id = %s", [Task._meta.pk.get_db_prep_value(task.pk, connection)]
        )
    with transaction.atomic():
        current = read(task.pk)
        assert {"priority", "title"} <= set(current.fields_as_read())
        validate_task(current)  # the stored priority is left alone
        current.title, current.max_attempts = "t" * 201, 0
        assert not {"title", "max_attempts"} & set(current.fields_as_read())
        with pytest.raises(InvalidTaskData) as refused:
            validate_task(current)
    assert set(refused.value.errors) == {"title", "max_attempts"}
    assert Task.objects.get(pk=task.pk).title == "echo task"
    fresh = Task(title="t" * 201, owner=user)  # a new task: every field checked
    assert fresh.fields_as_read() == []
    with pytest.raises(InvalidTaskData):
        validate_task(fresh)


def test_two_deliveries_claiming_at_once_run_the_task_once(user):
    task = submit(user)
    both_read = threading.Barrier(2)
    read_unlocked = unlocked_task
    claims: dict[str, Task | None] = {}

    def read_then_wait(task_id: Any) -> Task:
        read = read_unlocked(task_id)
        both_read.wait(timeout=10)  # each delivery has read the task queued before either writes
        return read

    def deliver(worker: str) -> None:
        claims[worker] = services.claim(task.pk, worker_id=worker)

    with mock.patch("tasks.services.base.unlocked_task", side_effect=read_then_wait):
        _in_threads(*(partial(deliver, worker) for worker in ("celery@a:1", "celery@b:1")))
    (winner,) = [w for w, claimed in claims.items() if claimed is not None]
    assert len(claims) == 2
    row = Task.objects.get(pk=task.pk)
    assert (row.state, row.attempt_count, row.worker_id) == ("running", 1, winner)
    assert _states(task) == ["queued", "running"]
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"]


def test_a_result_row_is_one_row_per_delivery_written_by_one_statement_each_and_redacted():
    secret = "sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH"
    common = {"content_type": "application/json", "content_encoding": "utf-8", "task_id": "r.1", "worker": HOSTNAME}
    with counted() as counts:
        CeleryResult.objects.store_result(result='{"pid": 1}', status="STARTED", date_started=Now(), **common)
    started = TaskResult.objects.get(task_id="r.1")
    with counted() as more:
        CeleryResult.objects.store_result(result=f'"token {secret}"', status="FAILURE", traceback=secret, **common)
    for each in (counts, more):  # one statement (and, outside a transaction, bulk_create's own BEGIN)
        assert each.kinds["INSERT"] == 1 and set(each.kinds) <= {"INSERT", "BEGIN"}, each
    (row,) = TaskResult.objects.filter(task_id="r.1")
    assert (row.status, row.result, row.traceback) == ("FAILURE", f'"token {REDACTED}"', REDACTED)
    assert (row.date_created, row.date_started) == (started.date_created, started.date_started)
    assert row.date_started is not None and row.date_done >= started.date_done


# The metrics: columns of the task row.


def test_metrics_merge_into_the_task_row_redacted_with_no_history_row(user):
    task = submit(user)
    services.claim(task.pk, worker_id=WORKER)
    attempt = {"attempt": 1, "worker_id": WORKER}
    rows = TaskHistory.objects.filter(task=task).count()
    services.record_metrics(task.pk, iterations=3, **attempt)
    services.record_metrics(task.pk, stop_reason="stop sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH", **attempt)
    assert TaskHistory.objects.filter(task=task).count() == rows, "figures are telemetry: no history row"
    services.finish_attempt(task.pk, result={}, metrics={"processing_time_seconds": 0.5}, **attempt)
    row = Task.objects.get(pk=task.pk)
    assert (row.iterations, row.stop_reason, row.processing_time_seconds) == (3, f"stop {REDACTED}", 0.5)
    assert (row.state, TaskHistory.objects.filter(task=task).count()) == ("completed", rows + 1)
    assert list(verify_audit_chains()) == []


@pytest.mark.parametrize(
    "figures, field",
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"iterations": "many"}, "iterations"),
        ({"stop_reason": "x" * 65}, "stop_reason"),
        ({"stop_reason": None}, "stop_reason"),
        ({"converged": "perhaps"}, "converged"),
        ({"processing_time_seconds": "slow"}, "processing_time_seconds"),
        ({"iterations": 2, "cost_usd": 1}, "cost_usd"),
    ],
)
def test_a_bad_figure_is_refused_by_field_and_nothing_is_written(user, figures, field):
    task = submit(user)
    services.claim(task.pk, worker_id=WORKER)
    attempt = {"attempt": 1, "worker_id": WORKER}
    before = Task.objects.filter(pk=task.pk).values().get()
    with pytest.raises(InvalidTaskData) as refused:
        services.record_metrics(task.pk, **figures, **attempt)
    assert list(refused.value.errors) == [field]
    with pytest.raises(InvalidTaskData):
        services.finish_attempt(task.pk, result={}, metrics=figures, **attempt)
    assert Task.objects.filter(pk=task.pk).values().get() == before, "neither the figures nor the outcome"


# One heartbeat thread per executing thread.


def _heartbeat_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if isinstance(thread, HeartbeatThread)]


def test_one_heartbeat_thread_renews_the_leases_of_attempt_after_attempt(user, settings):
    settings.TASK_LEASE_SECONDS = 0.4  # a renewal every 0.1 s; a lease not renewed is lost within 0.3 s
    lost: list[bool] = []
    for _ in range(2):  # warm: this thread's heartbeat thread exists from now on
        assert execute(str(submit(user).pk), worker_id=WORKER, on_lease_lost=lambda: lost.append(True)) == "completed"
    before = _heartbeat_threads()
    tasks = [submit(user, handler="sleep", request_payload={"seconds": 0.6, "steps": 3}) for _ in range(3)]
    for task in tasks:
        assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: lost.append(True)) == "completed"
        task.refresh_from_db()
        # The claim stamps heartbeat_at just before started_at: only a renewal moves it past.
        assert task.heartbeat_at > task.started_at, "the lease was renewed while the attempt ran"
    assert lost == [] and _heartbeat_threads() == before and len(before) >= 1


def test_attempts_that_end_first_leave_their_heartbeats_untaken_while_attempts_follow_one_another(user, monkeypatch):
    """The heartbeat thread looks for a new heartbeat every PICKUP_SECONDS instead of being woken for each: back to
    back, it takes up at most one a period (the one running then), never all of them."""
    for _ in range(2):  # warm: this thread's heartbeat thread exists and is not asleep
        assert execute(str(submit(user).pk), worker_id=WORKER) == "completed"
    taken: list[str] = []
    keep = Heartbeat.keep
    monkeypatch.setattr(Heartbeat, "keep", lambda self: (taken.append(str(self.ctx.task_id)), keep(self))[1])
    tasks = [submit(user) for _ in range(40)]
    began = time.monotonic()
    for task in tasks:
        assert execute(str(task.pk), worker_id=WORKER) == "completed"
    periods = (time.monotonic() - began) / HeartbeatThread.PICKUP_SECONDS
    assert len(taken) <= periods + 2 and len(taken) < len(tasks), (len(taken), periods)


def test_an_idle_heartbeat_thread_sleeps_and_the_next_attempt_wakes_it(user, settings, monkeypatch):
    """With no attempt for IDLE_SECONDS, the thread waits without a timeout; an attempt then wakes it at once, and
    its lease is renewed on time."""
    monkeypatch.setattr(HeartbeatThread, "IDLE_SECONDS", 0.1)
    assert execute(str(submit(user).pk), worker_id=WORKER) == "completed"
    (thread,) = [thread for thread in _heartbeat_threads() if thread.name.endswith(threading.current_thread().name)]
    deadline = time.monotonic() + 5
    while not thread.asleep:
        assert time.monotonic() < deadline, "the idle thread never went to sleep"
        time.sleep(0.02)
    settings.TASK_LEASE_SECONDS = 0.4  # a renewal every 0.1 s; a lease not renewed is lost within 0.3 s
    lost: list[bool] = []
    task = submit(user, handler="sleep", request_payload={"seconds": 0.5, "steps": 2})
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: lost.append(True)) == "completed"
    task.refresh_from_db()
    assert lost == [] and task.heartbeat_at > task.started_at, "renewed while the attempt ran"


# A real worker: Celery's tools read the rows.


cluster = test_worker.cluster  # the real workers and private broker of tests/tasks/test_worker.py


@pytest.mark.slow
def test_a_real_worker_leaves_what_celery_reads(cluster):
    cluster.worker(2)
    done, failed = submit_to_cluster(
        cluster, {"handler": "echo"}, {"handler": "fail", "request_payload": {"message": "no luck"}, "max_attempts": 1}
    )
    wait_until_finished([done, failed], cluster, timeout=60)
    for task_id in (done, failed):
        assert TaskHistory.objects.filter(task_id=task_id).count() == 3
    row = TaskResult.objects.get(task_id=Task.objects.get(pk=failed).celery_task_id)
    assert row.status == states.FAILURE and row.date_started is not None and row.worker.startswith("w0@"), row
    completed = Task.objects.get(pk=done)
    assert not TaskResult.objects.filter(task_id=completed.celery_task_id).exists(), "its row would repeat the task's"
    completion = AsyncResult(completed.celery_task_id, app=app)
    assert (completion.state, completion.result) == (states.SUCCESS, "completed")
    assert completion.worker.startswith("w0@") and completion.date_done == completed.completed_at
    failure = AsyncResult(Task.objects.get(pk=failed).celery_task_id, app=app)
    assert failure.state == states.FAILURE and "no luck" in str(failure.result)
