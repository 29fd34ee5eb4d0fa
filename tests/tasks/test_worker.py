"""Real Celery workers on a real Redis broker: kills, pauses, flushes and lost publishes lose no task, a stale
attempt writes nothing, and housekeeping (on its own queue and worker) is never held up by a backlog."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from celery import Celery

from tasks.models import Task, TaskHistory, TaskOutput
from tasks.states import TERMINAL_STATES
from tests.conftest import RUN_PREFIX, child_database_url, queued_count

ROOT = Path(__file__).resolve().parents[2]
HOUSEKEEPING_QUEUE = "crux.housekeeping"
pytestmark = pytest.mark.slow

SUBMIT = """
import json, os, signal, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import transaction
from tasks import services
from tasks.audit import Channel
spec = json.loads(sys.argv[1])
owner = get_user_model().objects.get(username=spec["owner"])
ids = []
for i in range(spec["count"]):
    with transaction.atomic():
        if spec.get("die_before_publish"):
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
        task = services.submit_task(
            owner=owner, actor=owner, channel=Channel.API, title=f"{spec['handler']} {i}",
            handler=spec["handler"], request_payload=spec.get("payload", {}),
            max_attempts=spec.get("max_attempts", 3),
        )
    ids.append(str(task.pk))
print(json.dumps(ids), flush=True)
"""

CANCEL = """
import sys
import django
django.setup()
from tasks import services
from tasks.audit import Channel
services.cancel(sys.argv[1], actor="ops:test", channel=Channel.COMMAND, reason="stop it")
"""

# Cancels a task the moment it runs: Django is set up before the task is even submitted (its id comes on stdin), so a
# loaded machine cannot let a short task finish while the cancelling process starts.
CANCEL_ONCE_RUNNING = """
import sys, time
import django
django.setup()
from tasks import services
from tasks.audit import Channel
from tasks.models import Task
print("ready", flush=True)
task_id = sys.stdin.readline().strip()
deadline = time.monotonic() + 60
while Task.objects.get(pk=task_id).state != "running":
    if time.monotonic() > deadline:
        sys.exit("the task never ran")
    time.sleep(0.02)
services.cancel(task_id, actor="ops:test", channel=Channel.COMMAND, reason="stop it")
"""


class Cluster:
    """Worker and beat processes sharing the test database and a private Redis broker."""

    def __init__(self, tmp_path: Path, redis_url: str):
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crux.settings",
            "DATABASE_URL": child_database_url(),
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "REDIS_KEY_PREFIX": RUN_PREFIX,
            "TASK_LEASE_SECONDS": "2",
            "RECOVERY_SWEEP_SECONDS": "0.5",
            "REDISPATCH_AFTER_SECONDS": "2",
            "TASK_HANDLERS_EXTRA": (
                "record=tests.handlers.record_execution,crash=tests.handlers.crash_worker,"
                "stall=tests.handlers.stall_once"
            ),
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "crux", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def worker(
        self, concurrency: int = 2, *queues: str, node_name: str | None = None, prefetch: int | None = None
    ) -> subprocess.Popen:
        name = f"w{len(self.processes)}"
        options = ["-Q", ",".join(queues)] if queues else []
        if prefetch is not None:
            options += ["--prefetch-multiplier", str(prefetch)]
        return self._spawn(
            name,
            [
                "worker",
                "-c",
                str(concurrency),
                "-n",
                node_name or f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
                *options,
            ],
        )

    def housekeeping(self) -> None:
        """Beat, and the worker of the housekeeping queue (as the Procfile runs them): the sweeps run."""
        self.worker(1, HOUSEKEEPING_QUEUE)
        self._spawn("beat", ["beat", "-s", str(self.tmp_path / "beat-schedule"), "-l", "INFO"])

    def run_script(self, script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", script, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )

    def submit(self, count: int, handler: str, **spec) -> list[str]:
        done = self.run_script(SUBMIT, json.dumps({"owner": "alice", "count": count, "handler": handler, **spec}))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp_path.glob("*.log")))

    def logs_in_full(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))

    def runs(self) -> Counter:
        """Celery tasks the workers ran, by name, by their own counters: an idle housekeeping job logs nothing."""
        probe = Celery("runs", set_as_current=False, broker=self.env["CELERY_BROKER_URL"])
        replies = probe.control.inspect(timeout=1).stats() or {}
        return sum((Counter(reply.get("total", {})) for reply in replies.values()), Counter())

    def sweeps(self) -> int:
        return self.runs()["crux.recovery_sweep"]


@pytest.fixture
def cluster(tmp_path, private_redis, live_db, user):
    """Set up after (so torn down before) the private Redis: the cleanup still reaches it."""
    cluster = Cluster(tmp_path, private_redis.url)
    yield cluster
    cluster.stop()


def pool_children(worker: subprocess.Popen) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_until_finished(ids: list[str], cluster: Cluster, timeout: float = 150, while_waiting=None) -> None:
    deadline = time.monotonic() + timeout
    while Task.objects.filter(pk__in=ids).exclude(state__in=TERMINAL_STATES).exists():
        if time.monotonic() > deadline:
            states = Counter(Task.objects.filter(pk__in=ids).values_list("state", flat=True))
            pytest.fail(f"tasks not finished after {timeout}s: {dict(states)}\n{cluster.logs()}")
        if while_waiting:
            while_waiting()
        time.sleep(0.2)


def transitions(task_id: str) -> list[str]:
    return list(TaskHistory.objects.filter(task_id=task_id).order_by("seq").values_list("state_to", flat=True))


def test_sigkilling_worker_children_loses_nothing_and_runs_nothing_twice(cluster, tmp_path):
    log = tmp_path / "executions.log"
    worker = cluster.worker(concurrency=2)
    cluster.housekeeping()
    ids = cluster.submit(200, "record", payload={"log": str(log), "duration": 0.1})
    kills = []
    rng = random.Random(7)

    def kill_a_child() -> None:
        if len(kills) >= 20 or (kills and time.monotonic() - kills[-1] < 0.6):
            return
        if not kills and not Task.objects.filter(pk__in=ids).exclude(state="queued").exists():
            return  # the pool is still starting: a child killed then takes the whole worker down (Celery's rule)
        children = pool_children(worker)
        if children:
            os.kill(rng.choice(children), signal.SIGKILL)
            kills.append(time.monotonic())

    wait_until_finished(ids, cluster, while_waiting=kill_a_child)
    assert len(kills) >= 10, "the test must actually kill workers"

    tasks = {str(t.pk): t for t in Task.objects.filter(pk__in=ids)}
    assert len(tasks) == 200
    lines = [line.split() for line in log.read_text().splitlines()]
    assert not [line for line in lines if line[0] == "OVERLAP"], "a task ran in two processes at once"
    starts = Counter((line[1], int(line[2])) for line in lines if line[0] == "start")
    assert max(starts.values()) == 1, "an attempt was executed twice"

    interrupted_total = 0
    for task_id, task in tasks.items():
        states = transitions(task_id)
        interrupted = states.count("interrupted")
        interrupted_total += interrupted
        assert states.count("running") == task.attempt_count
        if task.state == "completed":
            assert states.count("completed") == 1 and interrupted == task.attempt_count - 1
            assert task.result == {"attempt": task.attempt_count}
        else:
            assert task.state == "failed" and task.attempt_count == task.max_attempts == interrupted
            assert "attempt limit reached" in task.history.latest("seq").reason
        # Every execution ran under a claimed attempt (a child killed right after its claim leaves none).
        executed_attempts = {attempt for (tid, attempt) in starts if tid == task_id}
        assert executed_attempts <= set(range(1, task.attempt_count + 1))
        if task.state == "completed":
            assert task.attempt_count in executed_attempts
    assert interrupted_total >= 1, "no kill hit a running task"


def test_a_poison_pill_fails_after_its_limit_while_other_tasks_flow(cluster, tmp_path):
    cluster.worker(concurrency=2)
    cluster.housekeeping()
    (poison,) = cluster.submit(1, "crash", max_attempts=3)
    healthy = cluster.submit(30, "echo", payload={"message": "fine"})
    wait_until_finished([poison, *healthy], cluster)
    assert set(Task.objects.filter(pk__in=healthy).values_list("state", flat=True)) == {"completed"}
    task = Task.objects.get(pk=poison)
    assert (task.state, task.attempt_count) == ("failed", 3)
    # A publish not yet consumed after REDISPATCH_AFTER_SECONDS may be re-published by age (RabbitMQ keeps no
    # receipts; a slow worker start on a loaded machine): an edit row that changes no state and starts no attempt.
    changes = [
        state
        for state, reason in TaskHistory.objects.filter(task_id=poison)
        .order_by("seq")
        .values_list("state_to", "reason")
        if not (reason or "").startswith("re-dispatched")
    ]
    assert changes == ["queued"] + ["running", "interrupted", "queued"] * 2 + ["running", "interrupted", "failed"]
    assert "worker lost on each of 3 attempts" in task.last_error


def test_flushall_with_tasks_queued_still_completes_them(cluster, private_redis, tmp_path):
    ids = cluster.submit(20, "record", payload={"log": str(tmp_path / "x.log"), "duration": 0.01})
    assert queued_count(private_redis.client) == 20
    private_redis.client.flushall()
    cluster.worker(concurrency=2)
    cluster.housekeeping()
    wait_until_finished(ids, cluster)
    for task in Task.objects.filter(pk__in=ids):
        assert task.state == "completed"
        assert task.dispatch_count >= 2
        assert task.history.filter(event="edit", reason__startswith="re-dispatched").exists()


def test_a_crash_between_commit_and_publish_is_healed_by_the_sweep(cluster, private_redis):
    crashed = cluster.run_script(
        SUBMIT, json.dumps({"owner": "alice", "count": 1, "handler": "echo", "die_before_publish": True})
    )
    assert crashed.returncode == -signal.SIGKILL
    task = Task.objects.get()
    assert (task.state, task.dispatch_count) == ("queued", 1)
    assert queued_count(private_redis.client) == 0, "nothing was published"
    cluster.worker(concurrency=1)
    cluster.housekeeping()
    wait_until_finished([str(task.pk)], cluster)
    task.refresh_from_db()
    assert task.state == "completed"
    assert [h.event for h in task.history.order_by("seq")] == ["created", "edit", "transition", "transition"]


def test_cancel_terminates_a_running_task(cluster, tmp_path):
    log = tmp_path / "executions.log"
    cluster.worker(concurrency=1)
    canceller = subprocess.Popen(
        [sys.executable, "-c", CANCEL_ONCE_RUNNING],
        cwd=ROOT,
        env=cluster.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert canceller.stdout.readline().strip() == "ready", canceller.communicate(timeout=30)[1]
    (task_id,) = cluster.submit(1, "record", payload={"log": str(log), "duration": 3})
    _, errors = canceller.communicate(f"{task_id}\n", timeout=90)
    assert canceller.returncode == 0, errors + cluster.logs()
    time.sleep(4)
    task = Task.objects.get(pk=task_id)
    assert task.state == "cancelled" and task.result is None
    assert transitions(task_id) == ["queued", "running", "cancelled"]
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start"], "the execution was not stopped"


def test_a_restarted_worker_recovers_its_own_tasks_at_once(cluster, tmp_path):
    cluster.env["TASK_LEASE_SECONDS"] = "60"  # far longer than the test: only the startup pass can recover
    log = tmp_path / "executions.log"
    first = cluster.worker(concurrency=1)
    (task_id,) = cluster.submit(1, "record", payload={"log": str(log), "duration": 1.5})
    deadline = time.monotonic() + 30
    while Task.objects.get(pk=task_id).state != "running":
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker dies: main process and pool
    first.wait(timeout=10)
    cluster.processes.remove(first)
    cluster.worker(concurrency=1)  # same node name (w0@host): its startup pass finds the orphan
    wait_until_finished([task_id], cluster, timeout=60)
    task = Task.objects.get(pk=task_id)
    assert (task.state, task.attempt_count) == ("completed", 2)
    assert transitions(task_id) == ["queued", "running", "interrupted", "queued", "running", "completed"]
    assert "restarted" in task.history.get(seq=3).reason


@pytest.mark.parametrize(("flush", "kept"), [("0.25", True), ("30", False)], ids=["after-the-flush-period", "before"])
def test_an_output_a_killed_worker_had_appended_is_kept_once_it_waited_the_flush_period(cluster, tmp_path, flush, kept):
    """A handler appends an output and writes nothing more; its pool process is SIGKILLed a second later. With the
    default flush period the heartbeat had written the output by then; with one longer than the wait it had not:
    what a kill loses is the outputs of at most that period."""
    cluster.env.update(TASK_OUTPUT_FLUSH_SECONDS=flush, TASK_LEASE_SECONDS="60")  # no renewal or recovery meanwhile
    cluster.env["TASK_HANDLERS_EXTRA"] += ",hold=tests.handlers.output_then_hold"
    appended, release = tmp_path / "appended", tmp_path / "release"
    worker = cluster.worker(concurrency=1)
    (task_id,) = cluster.submit(1, "hold", payload={"appended": str(appended), "release": str(release)})
    deadline = time.monotonic() + 60
    while not appended.exists():
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.02)
    time.sleep(1.0)
    (child,) = pool_children(worker)
    assert int(appended.read_text()) == child
    os.kill(child, signal.SIGKILL)
    time.sleep(0.5)
    outputs = list(TaskOutput.objects.filter(task_id=task_id).values_list("content", flat=True))
    assert outputs == (["appended, then nothing else written"] if kept else [])
    assert Task.objects.get(pk=task_id).state == "running"  # killed mid-attempt; recovery comes after its lease


def test_a_task_a_killed_worker_had_taken_but_not_started_is_run_by_another(cluster, private_redis, tmp_path):
    """The killed worker held a second message in its prefetch: that task must not wait for the broker's
    visibility timeout (12 h) to come back, as it did when a node was killed with a message just taken."""
    log, gate = tmp_path / "executions.log", tmp_path / "gate"
    doomed = cluster.worker(1, node_name="doomed@%h", prefetch=2)
    ids = cluster.submit(2, "record", payload={"log": str(log), "duration": 120, "until": str(gate)})
    running = wait_for(
        lambda: Task.objects.filter(pk__in=ids, state="running").values_list("pk", flat=True).first(),
        cluster,
        "the worker runs one task",
    )
    wait_for(lambda: queued_count(private_redis.client) == 0, cluster, "the worker took the other's message too")
    (waiting,) = [task_id for task_id in ids if task_id != str(running)]
    assert Task.objects.get(pk=waiting).state == "queued"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    cluster.processes.remove(doomed)

    cluster.housekeeping()
    cluster.worker(2)
    gate.touch()
    wait_until_finished(ids, cluster, timeout=90)
    lost_message = Task.objects.get(pk=waiting)
    assert (lost_message.state, lost_message.attempt_count) == ("completed", 1)
    (reason,) = lost_message.history.filter(reason__startswith="re-dispatched").values_list("reason", flat=True)
    assert "never started it" in reason
    assert transitions(str(running)) == ["queued", "running", "interrupted", "queued", "running", "completed"]


def test_a_worker_keeps_its_database_connection_across_tasks_and_replaces_a_broken_one(cluster):
    """Celery's Django fixup would open a connection per task (``CELERY_DB_REUSE_MAX``): one connection serves
    task after task, and one that broke (on PostgreSQL: its server process terminated) is replaced before the
    next task uses it, which completes."""
    from django.db import connection

    cluster.env["TASK_HANDLERS_EXTRA"] += ",marker=tests.handlers.connection_marker"
    cluster.worker(concurrency=1)

    def run_one() -> dict:
        (task_id,) = cluster.submit(1, "marker")
        wait_until_finished([task_id], cluster, timeout=60)
        task = Task.objects.get(pk=task_id)
        assert task.state == "completed", cluster.logs()
        return task.result

    served = [run_one() for _ in range(3)]
    assert [result["tasks_on_this_connection"] for result in served] == [1, 2, 3]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [served[-1]["backend"]])
            assert cursor.fetchone()[0] is True
        after = run_one()
        assert after["tasks_on_this_connection"] == 1 and after["backend"] != served[-1]["backend"]


def wait_for(condition, cluster: Cluster, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s\n{cluster.logs()}")
        time.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_worker_paused_past_its_lease_writes_nothing_after_the_takeover(cluster, tmp_path):
    log, resume = tmp_path / "stall.log", tmp_path / "resume"
    cluster.housekeeping()
    first = cluster.worker(concurrency=1)
    payload = {"log": str(log), "resume": str(resume), "steps": 40, "pause_at": 3, "interval": 0.05}
    (task_id,) = cluster.submit(1, "stall", payload=payload)
    line = wait_for(
        lambda: [ln for ln in log.read_text().splitlines() if ln.startswith("pausing")] if log.exists() else [],
        cluster,
        "attempt 1 reaches its pause",
    )
    stale_pid = int(line[0].split()[2])
    os.killpg(first.pid, signal.SIGSTOP)  # the whole worker, main process and pool, as a paused VM
    try:
        cluster.worker(concurrency=1)
        wait_for(
            lambda: Task.objects.filter(pk=task_id, state="running", attempt_count=2).exists(),
            cluster,
            "the sweep recovers the paused attempt and a second worker claims the task",
        )
        takeover = TaskHistory.objects.filter(task_id=task_id, state_to="running").order_by("seq").last().created_at
        resume.touch()
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    wait_for(
        lambda: f"stopped 1 {stale_pid}" in log.read_text() or not alive(stale_pid),
        cluster,
        "the resumed stale attempt stops",
    )
    wait_until_finished([task_id], cluster, timeout=60)

    lines = log.read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("wrote 1 ")] == ["wrote 1 0", "wrote 1 1", "wrote 1 2"]
    task = Task.objects.get(pk=task_id)
    assert (task.state, task.attempt_count, task.result) == ("completed", 2, {"attempt": 2})
    outputs = list(task.outputs.all())  # the content takes no SQL filter (it may be stored compressed)
    stale_outputs = [output for output in outputs if output.content.startswith("attempt 1 ")]
    assert sorted(output.content for output in stale_outputs) == [f"attempt 1 step {i}" for i in range(3)]
    assert all(output.created_at < takeover for output in stale_outputs)
    assert sum(output.content.startswith("attempt 2 ") for output in outputs) == 40
    assert (task.iterations, task.stop_reason) == (39, "attempt 2")
    assert task.current_phase == "attempt 2 step 39"
    assert transitions(task_id) == ["queued", "running", "interrupted", "queued", "running", "completed"]
    lost = task.history.get(state_to="interrupted")
    assert "lease expired" in lost.reason and "attempt 1 no longer holds the task" in lost.reason


def test_worker_loss_is_detected_within_lease_and_sweep_behind_a_backlog(cluster, tmp_path):
    lease, sweep = float(cluster.env["TASK_LEASE_SECONDS"]), float(cluster.env["RECOVERY_SWEEP_SECONDS"])
    log = tmp_path / "executions.log"
    cluster.housekeeping()
    cluster.worker(concurrency=1)
    doomed = cluster.worker(concurrency=1)
    ids = cluster.submit(40, "record", payload={"log": str(log), "duration": 1.0})
    lost_id = wait_for(
        lambda: (
            Task.objects.filter(pk__in=ids, state="running", worker_id__startswith="w3@")
            .values_list("pk", flat=True)
            .first()
        ),
        cluster,
        "the second worker runs a task",
    )
    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()
    detected = wait_for(
        lambda: TaskHistory.objects.filter(task_id=lost_id, state_to="interrupted").first(),
        cluster,
        "the lost attempt is detected",
        timeout=lease + sweep + 30,
    )
    backlog = Task.objects.filter(pk__in=ids, state="queued").count()
    assert detected.created_at.timestamp() - killed_at <= lease + sweep + 10  # generous: two cores, busy
    assert backlog >= 20, "detected while the backlog was still long, not after it"
    assert "lease expired" in detected.reason


def test_a_backlog_drained_by_one_slow_worker_is_published_once_per_task(cluster, tmp_path):
    log = tmp_path / "executions.log"
    # 10 ms a task: the one worker drains for 10 s or more, twenty sweep periods however fast the machine is.
    ids = cluster.submit(1000, "record", payload={"log": str(log), "duration": 0.01})
    cluster.env["REDISPATCH_AFTER_SECONDS"] = "0.5"  # by age, the whole backlog would be re-published every sweep
    cluster.housekeeping()
    cluster.worker(concurrency=1)
    wait_until_finished(ids, cluster, timeout=300)
    counts = Counter(Task.objects.filter(pk__in=ids).values_list("dispatch_count", flat=True))
    assert counts == {1: 1000}, "a task waiting in the backlog was published again"
    assert not TaskHistory.objects.filter(task_id__in=ids, reason__startswith="re-dispatched").exists()
    assert set(Task.objects.filter(pk__in=ids).values_list("attempt_count", flat=True)) == {1}
    starts = Counter(line.split()[1] for line in log.read_text().splitlines() if line.startswith("start "))
    assert len(starts) == 1000 and set(starts.values()) == {1}
    logs = cluster.logs_in_full()
    assert "duplicate delivery" not in logs, "a task's message was delivered twice"
    assert cluster.sweeps() >= 10, "the sweep ran often while the backlog drained"


def test_housekeeping_keeps_its_period_behind_a_backlog_of_1000_slow_tasks(cluster, tmp_path):
    """Task work and housekeeping have queues and workers of their own: 1,000 slow tasks waiting for the one task
    worker do not slow the recovery sweep or the publishing of due tasks (each every 0.5 s here)."""
    period = float(cluster.env["RECOVERY_SWEEP_SECONDS"])
    cluster.env["DISPATCH_DUE_SECONDS"] = str(period)
    log = tmp_path / "executions.log"
    ids = cluster.submit(1000, "record", payload={"log": str(log), "duration": 60})
    cluster.worker(concurrency=1)
    cluster.housekeeping()
    wait_for(lambda: Task.objects.filter(pk__in=ids, state="running").exists(), cluster, "the backlog draining")
    wait_for(lambda: cluster.sweeps() > 0, cluster, "the first sweep")

    before, started = cluster.runs(), time.monotonic()
    time.sleep(6)
    after, elapsed = cluster.runs(), time.monotonic() - started
    assert Task.objects.filter(pk__in=ids, state="queued").count() >= 990, "the backlog was not there all along"
    for job in ("crux.recovery_sweep", "crux.dispatch_due"):
        done = after[job] - before[job]
        print(f"{job}: {done} runs in {elapsed:.1f} s behind the backlog (period {period} s)")
        assert done >= 0.6 * elapsed / period, (job, done, elapsed)


def test_flushall_of_the_broker_republishes_every_queued_task_exactly_once(cluster, private_redis):
    cluster.housekeeping()
    ids = cluster.submit(50, "echo", payload={"message": "x"})
    wait_for(
        lambda: not Task.objects.filter(pk__in=ids, dispatch_epoch="").exists(),
        cluster,
        "the sweep confirms every publish under the broker's epoch",
    )
    (epoch,) = set(Task.objects.filter(pk__in=ids).values_list("dispatch_epoch", flat=True))
    assert queued_count(private_redis.client) == 50
    private_redis.client.flushall()
    wait_for(
        lambda: (
            not Task.objects.filter(pk__in=ids).exclude(dispatch_count=2).exclude(dispatch_epoch="").exists()
            and not Task.objects.filter(pk__in=ids, dispatch_epoch__in=["", epoch]).exists()
        ),
        cluster,
        "every queued task is re-published under a new epoch",
    )
    sweeps = cluster.sweeps()
    wait_for(lambda: cluster.sweeps() >= sweeps + 6, cluster, "more sweeps run")
    assert queued_count(private_redis.client) == 50, "one message per task, not one per sweep"
    cluster.worker(concurrency=2)
    wait_until_finished(ids, cluster)
    for task in Task.objects.filter(pk__in=ids):
        assert (task.state, task.dispatch_count, task.attempt_count) == ("completed", 2, 1)
        (reason,) = task.history.filter(reason__startswith="re-dispatched").values_list("reason", flat=True)
        assert f"epoch {epoch} is gone" in reason
