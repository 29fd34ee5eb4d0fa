"""Execution in-process (no broker): claim, outcome, duplicates, leases, recovery, re-dispatch."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import ClaimLost, IllegalTransition, InvalidTaskData
from tasks.execution import execute
from tasks.models import METRIC_FIELDS, Task, TaskOutput

pytestmark = pytest.mark.usefixtures("live_db")

WORKER = "celery@test:1"


@pytest.fixture(autouse=True)
def test_handlers(settings):
    settings.TASK_HANDLERS = {
        **settings.TASK_HANDLERS,
        "cancel_myself": "tests.handlers.cancel_myself",
        "taken_over_midway": "tests.handlers.taken_over_midway",
    }


def submit(user, handler="echo", **fields):
    fields.setdefault("title", f"{handler} task")
    return services.submit_task(owner=user, actor=user, channel=Channel.API, handler=handler, **fields)


def events(task):
    return [(h.event, h.state_from, h.state_to, h.channel) for h in task.history.order_by("seq")]


def test_submit_creates_a_queued_task_with_one_row(user):
    task = submit(user, request_payload={"message": "hi"})
    assert task.state == "queued" and task.dispatch_count == 1 and task.dispatched_at is not None
    assert events(task) == [("created", "", "queued", "api")]


def test_submit_refuses_an_unknown_handler(user):
    with pytest.raises(InvalidTaskData) as info:
        submit(user, handler="rm_rf")
    assert "handler" in info.value.errors and Task.objects.count() == 0


def test_echo_runs_to_completion_with_outputs_and_metrics(user):
    task = submit(user, request_payload={"message": "hello"})
    assert execute(str(task.pk), worker_id=WORKER) == "completed"
    task.refresh_from_db()
    assert (task.state, task.result, task.attempt_count, task.progress) == ("completed", {"echo": "hello"}, 1, 1.0)
    assert task.outputs.get().content == "hello"
    assert task.processing_time_seconds >= 0
    assert events(task)[1:] == [
        ("transition", "queued", "running", "worker"),
        ("transition", "running", "completed", "worker"),
    ]


def test_a_duplicate_delivery_does_nothing(user):
    task = submit(user)
    execute(str(task.pk), worker_id=WORKER)
    assert execute(str(task.pk), worker_id="celery@other:2") == "skipped"
    task.refresh_from_db()
    assert task.attempt_count == 1 and task.history.count() == 3


def test_a_handler_exception_records_the_failure(user):
    task = submit(user, handler="fail", request_payload={"message": "no luck"}, max_attempts=1)
    assert execute(str(task.pk), worker_id=WORKER) == "failed"
    task.refresh_from_db()
    assert task.state == "failed" and "RuntimeError: no luck" in task.last_error
    assert task.history.latest("seq").error_message == task.last_error
    assert task.outputs.get().output_type == "stderr"


def test_agent_demo_records_its_metrics(user):
    task = submit(user, handler="agent_demo", request_payload={"max_iterations": 4, "converge_after": 2, "delay": 0})
    assert execute(str(task.pk), worker_id=WORKER) == "completed"
    metrics = Task.objects.get(pk=task.pk)
    assert (metrics.iterations, metrics.stop_reason, metrics.converged) == (2, "evaluator_stop", True)
    assert metrics.total_tokens == metrics.prompt_tokens + metrics.completion_tokens > 0
    assert sorted(task.outputs.values_list("output_type", flat=True)) == ["artifact", "log", "log"]


def test_an_outcome_after_cancel_is_discarded(user):
    task = submit(user, handler="cancel_myself")
    assert execute(str(task.pk), worker_id=WORKER) == "discarded"
    task.refresh_from_db()
    assert task.state == "cancelled" and task.result is None
    assert [e[2] for e in events(task)] == ["queued", "running", "cancelled"]
    assert figures(task) == NO_FIGURES, "a discarded outcome records no figures"


def test_the_heartbeat_stops_an_execution_whose_claim_is_gone(user, settings):
    settings.TASK_LEASE_SECONDS = 0.4
    lost = []
    task = submit(user, handler="cancel_myself", request_payload={"linger": 0.6})
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: lost.append(True)) == "discarded"
    assert lost == [True]


def test_the_heartbeat_renews_the_lease(user, settings):
    settings.TASK_LEASE_SECONDS = 0.4
    task = submit(user, handler="sleep", request_payload={"seconds": 1.0, "steps": 4})
    lost = []
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: lost.append(True)) == "completed"
    assert lost == []
    assert Task.objects.get(pk=task.pk).history.count() == 3


# What a running attempt writes, again and again, besides its transitions: each a conditional UPDATE of the task row.
ATTEMPT_TELEMETRY = {
    "lease renewal": (
        {"lease_expires_at", "heartbeat_at"},
        lambda task: services.renew_lease(task.pk, attempt=1, worker_id=WORKER),
    ),
    "progress": (
        {"progress", "current_phase", "updated_at"},
        lambda task: services.report_progress(task.pk, attempt=1, worker_id=WORKER, progress=0.5, phase="step"),
    ),
    "figures": (
        set(METRIC_FIELDS),
        lambda task: services.record_metrics(task.pk, attempt=1, worker_id=WORKER, iterations=2, prompt_tokens=9),
    ),
}


@pytest.mark.parametrize("write", ATTEMPT_TELEMETRY)
def test_a_running_attempts_telemetry_writes_no_index_entry(user, write):
    """A running agent renews its lease every few seconds, and reports progress and figures as it goes, for as
    long as it runs: no index of the task table holds a column these writes change, so on PostgreSQL each is a HOT
    update, which writes no index entry (the trigram indexes' entries for the task's title and description among
    them: with the lease in a partial index, every renewal added them all)."""
    columns, written = ATTEMPT_TELEMETRY[write]
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = [c for c in constraints.values() if c["index"] or c["unique"] or c["primary_key"]]
    indexed = {column for index in indexes for column in index["columns"] or () if column}
    assert {"id", "state", "created_at"} <= indexed and not indexed & columns
    if connection.vendor != "postgresql":
        return
    task = submit(user, description="Make the import queue flow work for upload users.")
    services.claim(task.pk, worker_id=WORKER)
    updates = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(updates, [table])
        before = cursor.fetchone()
        for _ in range(3):
            assert written(task)
        cursor.execute(updates, [table])
        after = cursor.fetchone()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3)  # three UPDATEs, each HOT


SUCCESSOR = "celery@other:2"


def take_over(task):
    """What happens to an attempt whose worker stalls past its lease: the sweep recovers it, another worker claims."""
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.recover_orphans()["requeued"] == 1
    return services.claim(task.pk, worker_id=SUCCESSOR)


def written_by_attempts(task):
    """Everything an attempt can write, as the database holds it."""
    fields = ("state", "attempt_count", "worker_id", "progress", "current_phase", "lease_expires_at", "history_count")
    return (
        Task.objects.filter(pk=task.pk).values(*fields).get(),
        list(TaskOutput.objects.filter(task=task).values_list("content", flat=True)),
        figures(task),
    )


NO_FIGURES = {name: "" if name == "stop_reason" else None for name in METRIC_FIELDS}


def figures(task):
    """The task's execution figures as the database holds them."""
    return Task.objects.filter(pk=task.pk).values(*METRIC_FIELDS).get()


ATTEMPT_WRITES = {
    "output": lambda pk, attempt, worker: services.record_output(pk, "stdout", "x", attempt=attempt, worker_id=worker),
    "metrics": lambda pk, attempt, worker: services.record_metrics(pk, attempt=attempt, worker_id=worker, iterations=7),
    "progress": lambda pk, attempt, worker: services.report_progress(
        pk, attempt=attempt, worker_id=worker, progress=0.5, phase="p"
    ),
}


@pytest.mark.parametrize("write", list(ATTEMPT_WRITES))
@pytest.mark.parametrize("lost_by", ["takeover", "cancel"])
def test_a_write_of_an_attempt_that_lost_its_claim_is_refused_and_writes_nothing(user, write, lost_by):
    task = submit(user)
    services.claim(task.pk, worker_id=WORKER)
    if lost_by == "takeover":
        take_over(task)
    else:
        services.cancel(task.pk, actor=user, channel=Channel.API, reason="stop")
    before = written_by_attempts(task)
    with pytest.raises(ClaimLost, match="no longer holds its claim"):
        ATTEMPT_WRITES[write](task.pk, 1, WORKER)
    assert written_by_attempts(task) == before


@pytest.mark.parametrize("write", list(ATTEMPT_WRITES))
@pytest.mark.parametrize(("attempt", "worker_id"), [(2, WORKER), (0, WORKER), (1, "celery@other:1"), (1, "")])
def test_a_write_naming_another_attempt_or_worker_is_refused_and_writes_nothing(user, write, attempt, worker_id):
    """Each part of the claim is checked, by the output's locked read as by the other writes' conditional UPDATE;
    the claim's own attempt and worker then write."""
    task = submit(user)
    services.claim(task.pk, worker_id=WORKER)
    before = written_by_attempts(task)
    with pytest.raises(ClaimLost, match="no longer holds its claim"):
        ATTEMPT_WRITES[write](task.pk, attempt, worker_id)
    assert written_by_attempts(task) == before
    ATTEMPT_WRITES[write](task.pk, 1, WORKER)
    assert written_by_attempts(task) != before


def test_an_output_for_a_task_that_is_not_there_is_refused(user):
    with pytest.raises(ClaimLost, match="no longer holds its claim"):
        services.record_output(uuid.uuid4(), "stdout", "x", attempt=1, worker_id=WORKER)


def test_a_stale_heartbeat_and_outcome_change_nothing(user):
    task = submit(user)
    services.claim(task.pk, worker_id=WORKER)
    take_over(task)
    before = written_by_attempts(task)
    assert services.renew_lease(task.pk, attempt=1, worker_id=WORKER) is False
    outcome = services.finish_attempt(
        task.pk, attempt=1, worker_id=WORKER, result={"late": 1}, metrics={"iterations": 9}
    )
    assert outcome is None
    assert written_by_attempts(task) == before
    # The current attempt still writes.
    services.record_output(task.pk, "stdout", "current", attempt=2, worker_id=SUCCESSOR)
    assert TaskOutput.objects.filter(task=task).count() == 1


@pytest.mark.parametrize("swallow", [False, True], ids=["stops", "catches-and-carries-on"])
def test_a_handler_taken_over_midway_stops_and_leaves_nothing_after_the_takeover(user, tmp_path, swallow):
    log = tmp_path / "writes.log"
    task = submit(
        user, handler="taken_over_midway", request_payload={"log": str(log), "successor": SUCCESSOR, "swallow": swallow}
    )
    assert execute(str(task.pk), worker_id=WORKER, on_lease_lost=lambda: None) == "discarded"
    # Stopped at its first write after the takeover; one that swallows the refusal is refused every time.
    assert log.read_text().split("\n")[:-1] == (
        ["refused output", "refused progress", "refused metrics"] if swallow else ["refused output"]
    )
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.worker_id) == ("running", 2, SUCCESSOR)
    assert (task.progress, task.current_phase) == (0.0, ""), "the successor's claim reset them; nothing since"
    assert list(task.outputs.values_list("content", flat=True)) == ["before the takeover"]
    assert figures(task) == NO_FIGURES
    assert [e[2] for e in events(task)] == ["queued", "running", "interrupted", "queued", "running"]
    lost = task.history.get(state_to="interrupted")
    assert "attempt 1 no longer holds the task" in lost.reason and "refused" in lost.reason


def claim_and_expire(task, worker=WORKER):
    services.claim(task.pk, worker_id=worker)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_an_expired_lease_is_interrupted_and_requeued_until_the_limit(user):
    task = submit(user, max_attempts=2)
    claim_and_expire(task)
    assert services.recover_orphans() == {"interrupted": 1, "requeued": 1, "failed": 0}
    task.refresh_from_db()
    assert (task.state, task.attempt_count, task.dispatch_count, task.worker_id) == ("queued", 1, 2, "")
    claim_and_expire(task)
    assert services.recover_orphans() == {"interrupted": 1, "requeued": 0, "failed": 1}
    task.refresh_from_db()
    assert task.state == "failed" and "worker lost on each of 2 attempts" in task.last_error
    assert [(e[2], e[3]) for e in events(task)] == [
        ("queued", "api"),
        ("running", "worker"),
        ("interrupted", "recovery"),
        ("queued", "recovery"),
        ("running", "worker"),
        ("interrupted", "recovery"),
        ("failed", "recovery"),
    ]
    assert "attempt limit reached" in task.history.latest("seq").reason


def test_a_live_lease_is_left_alone_unless_its_worker_restarted(user):
    task = submit(user)
    services.claim(task.pk, worker_id="celery@box:42")
    assert services.recover_orphans() == {"interrupted": 0, "requeued": 0, "failed": 0}
    assert services.recover_orphans(worker_prefix="celery@other:") == {"interrupted": 0, "requeued": 0, "failed": 0}
    assert services.recover_orphans(worker_prefix="celery@box:")["requeued"] == 1
    assert "restarted" in Task.objects.get(pk=task.pk).history.get(seq=3).reason


def test_redispatch_republishes_queued_tasks_with_backoff(user):
    task = submit(user)
    assert services.redispatch_stale(base_seconds=60) == 0
    assert services.redispatch_stale(base_seconds=0) == 1
    task.refresh_from_db()
    assert task.dispatch_count == 2
    row = task.history.latest("seq")
    assert (row.event, row.channel) == ("edit", "recovery") and row.reason.startswith("re-dispatched")
    running = submit(user)
    services.claim(running.pk, worker_id=WORKER)
    assert services.redispatch_stale(base_seconds=0) == 1  # only the queued one


def test_cancel_rules(user):
    queued = submit(user)
    services.cancel(queued.pk, actor=user, channel=Channel.API, reason="changed my mind")
    assert Task.objects.get(pk=queued.pk).history.latest("seq").reason == "changed my mind"
    done = submit(user)
    execute(str(done.pk), worker_id=WORKER)
    with pytest.raises(IllegalTransition, match="completed -> cancelled"):
        services.cancel(done.pk, actor=user, channel=Channel.API, reason="too late")
    assert Task.objects.get(pk=done.pk).state == "completed"


def test_a_soft_deleted_queued_task_is_not_run(user):
    task = submit(user)
    services.soft_delete(task.pk, user=user, channel=Channel.API, reason="not needed")
    assert execute(str(task.pk), worker_id=WORKER) == "skipped"
    task.refresh_from_db()
    assert task.state == "cancelled" and task.attempt_count == 0


def test_default_orphan_detection_is_within_30_seconds(settings):
    from crux import settings as defaults

    assert defaults.env.float("TASK_LEASE_SECONDS", default=20.0) == 20.0
    assert settings.TASK_LEASE_SECONDS + settings.RECOVERY_SWEEP_SECONDS <= 30
