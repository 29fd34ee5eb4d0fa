"""The worker registry (writes, live and gone instances), the dashboard's new figures (queue depths, finished per
minute, run-time percentiles) and the Workers page, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from tasks import selectors, services
from tasks.audit import Channel
from tasks.models import Task, TaskHistory, Worker
from tasks.selectors import figures
from tasks.services import WorkerReport
from tests.conftest import TEST_QUEUE
from tests.tasks import test_worker

cluster = test_worker.cluster  # real workers on a private broker, as tests/tasks/test_worker.py starts them
pytestmark = pytest.mark.django_db

NOON = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)


def report(name: str = "w1@box", pid: int = 100, pool_pids: tuple[int, ...] = (101, 102), **fields) -> WorkerReport:
    values = {"hostname": "box", "queues": ["celery"], "concurrency": len(pool_pids), **fields}
    return WorkerReport(name=name, pid=pid, pool_pids=list(pool_pids), **values)


def move(task, *states):
    for state in states:
        task = services.transition(task.pk, state, actor="system:test", channel=Channel.SYSTEM, reason="test")
    return task


def running(make_task, worker_id: str, **fields) -> Task:
    task = move(make_task(**fields), "queued")
    claimed = services.claim(task.pk, worker_id=worker_id)
    assert claimed is not None
    return claimed


def silence(worker_name: str, seconds: float) -> None:
    Worker.objects.filter(name=worker_name).update(last_heartbeat=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
def clock(monkeypatch):
    """``timezone.now`` under the test's control (the services and the history writer read it)."""

    class Clock:
        now = NOON

        def at(self, when: datetime) -> None:
            self.now = when

    c = Clock()
    monkeypatch.setattr(timezone, "now", lambda: c.now)
    return c


# --- The registry.


def test_a_heartbeat_upserts_one_row_per_instance_keeping_its_start():
    services.report_worker(report())
    first = Worker.objects.get()
    services.report_worker(report(pool_pids=(101, 103), queues=["b", "a"]))
    again = Worker.objects.get()
    assert again.pk == first.pk and again.started_at == first.started_at
    assert again.last_heartbeat >= first.last_heartbeat
    assert (again.pool_pids, again.queues, again.stopped_at) == ([101, 103], ["a", "b"], None)
    services.report_worker(report(pid=200))  # a restart of the same node name is another instance
    assert Worker.objects.count() == 2


def test_live_workers_carry_their_processes_and_the_tasks_each_runs(make_task):
    services.report_worker(report())
    services.report_worker(report(name="w2@box", pid=300, pool_pids=(301,)))
    busy = running(make_task, "w1@box:100:102", title="indexing")
    elsewhere = running(make_task, "w9@gone:900:901", title="of a worker that never reported")
    live = {w.worker.name: w for w in selectors.live_workers()}
    assert sorted(live) == ["w1@box", "w2@box"]
    w1 = live["w1@box"]
    assert [(p.pid, [t.pk for t in p.tasks]) for p in w1.processes] == [(101, []), (102, [str(busy.pk)])]
    assert w1.running == 1 and w1.processes[1].tasks[0].title == "indexing"
    assert timedelta(0) <= w1.heartbeat_age < timedelta(seconds=5)
    assert live["w2@box"].running == 0
    assert str(elsewhere.pk) not in {t.pk for w in live.values() for p in w.processes for t in p.tasks}
    assert selectors.count_live_workers() == 2


def test_a_task_in_a_process_the_pool_no_longer_lists_is_still_shown(make_task):
    services.report_worker(report(pool_pids=(101,)))
    task = running(make_task, "w1@box:100:555")
    [worker] = selectors.live_workers()
    assert [(p.pid, [t.pk for t in p.tasks]) for p in worker.processes] == [(101, []), (555, [str(task.pk)])]


def test_a_silent_worker_drops_out_and_a_stopped_one_leaves_at_once(settings):
    settings.WORKER_STALE_SECONDS = 10
    for name in ("killed@box", "stopped@box", "alive@box"):
        services.report_worker(report(name=name))
    silence("killed@box", 11)
    services.stop_worker("stopped@box", 100)
    assert [w.worker.name for w in selectors.live_workers()] == ["alive@box"]
    assert selectors.count_live_workers() == 1
    gone = {w.name: w for w in selectors.gone_workers()}
    assert sorted(gone) == ["killed@box", "stopped@box"]
    assert gone["stopped@box"].stopped_at is not None and gone["killed@box"].stopped_at is None
    assert gone["killed@box"].heartbeat_age >= timedelta(seconds=11)
    services.report_worker(report(name="killed@box"))  # it reports again (it was only cut off): live again
    assert selectors.count_live_workers() == 2


def test_forget_workers_deletes_only_the_long_silent():
    for name in ("old@box", "recent@box"):
        services.report_worker(report(name=name))
    silence("old@box", 3600)
    assert services.forget_workers(600) == 1
    assert list(Worker.objects.values_list("name", flat=True)) == ["recent@box"]
    assert services.forget_workers(600) == 0


def test_registry_writes_leave_no_history(make_task):
    task = make_task()
    rows = task.history.count()
    services.report_worker(report())
    services.stop_worker("w1@box", 100)
    assert task.history.count() == rows


# --- Figures.


def test_queue_depths_count_queued_tasks_per_queue_and_the_oldest_publish(make_task, clock, settings, user):
    settings.TASK_QUEUES = ["reports"]
    move(make_task(title="default 1"), "queued")
    clock.at(NOON + timedelta(seconds=40))
    move(make_task(title="default 2"), "queued")
    move(make_task(title="reports", queue="reports"), "queued")
    services.submit_task(
        owner=user, actor=user, channel=Channel.API, title="later", queue="reports", run_at=NOON + timedelta(hours=1)
    )
    move(make_task(title="running"), "queued", "running")
    make_task(title="pending")
    depths = {d.queue: d for d in selectors.queue_depths()}
    assert (depths[""].waiting, depths[""].scheduled, depths[""].oldest_published_at) == (2, 0, NOON)
    assert (depths["reports"].waiting, depths["reports"].scheduled) == (1, 1)

    from crux import dashboard

    clock.at(NOON + timedelta(seconds=90))
    rows = {row["queue"]: row for row in dashboard.queues(timezone.now())}
    assert list(rows) == [settings.CELERY_TASK_DEFAULT_QUEUE, "reports"]  # the default queue first
    assert (rows[settings.CELERY_TASK_DEFAULT_QUEUE]["waiting"], rows["reports"]["scheduled"]) == (2, 1)
    assert rows[settings.CELERY_TASK_DEFAULT_QUEUE]["oldest_age"] == "1 min 30 s"


def test_finished_per_minute_counts_terminal_transitions_by_minute(make_task, clock):
    tasks = [move(make_task(title=f"t{i}"), "queued", "running") for i in range(4)]
    clock.at(NOON - timedelta(minutes=2))
    move(tasks[0], "completed")
    clock.at(NOON)
    move(tasks[1], "failed")
    move(tasks[2], "cancelled")
    minutes = selectors.finished_per_minute(NOON + timedelta(seconds=10), 5)
    assert [m["finished"] for m in minutes] == [0, 0, 1, 0, 2]
    assert minutes[-1]["minute"] == NOON.replace(second=0)


def test_history_since_reads_from_the_first_row_of_its_moment_by_id(make_task, clock):
    """The history keeps no index on its time: a moment's rows are found from their first id (a binary search)."""
    assert selectors.history_since(NOON).count() == 0
    written = []
    for minute in range(12):
        clock.at(NOON + timedelta(minutes=minute))
        task = make_task(title=f"t{minute}")
        written.append(TaskHistory.objects.get(task=task))
    for minute in (0, 1, 5, 11):
        moment = NOON + timedelta(minutes=minute)
        assert figures.first_history_id_since(moment) == written[minute].pk
        assert [row.pk for row in selectors.history_since(moment).order_by("pk")] == [r.pk for r in written[minute:]]
    assert figures.first_history_id_since(NOON + timedelta(hours=1)) == written[-1].pk + 1
    assert not selectors.history_since(NOON + timedelta(hours=1)).exists()


def test_a_row_written_with_an_earlier_time_than_the_row_before_it_is_still_counted(make_task, clock):
    """A transaction that took its time before another's INSERT got the later id: within the slack, it counts."""
    clock.at(NOON + timedelta(minutes=10))
    later = make_task(title="later time, smaller id")
    clock.at(NOON + timedelta(minutes=9))
    earlier = make_task(title="earlier time, larger id")
    rows = {row.task_id: row.pk for row in TaskHistory.objects.filter(task__in=[later, earlier])}
    assert rows[earlier.pk] > rows[later.pk]
    since = set(selectors.history_since(NOON + timedelta(minutes=9)).values_list("task_id", flat=True))
    assert since == {later.pk, earlier.pk}
    since = set(selectors.history_since(NOON + timedelta(minutes=9, seconds=30)).values_list("task_id", flat=True))
    assert since == {later.pk}, "filtered by time exactly"
    clock.at(NOON + timedelta(minutes=10, seconds=5))
    assert selectors.count_events_since(NOON + timedelta(minutes=9), "created", "restore") == {
        "created": 2,
        "restore": 0,
    }


def test_the_history_admin_filters_rows_by_when_they_were_written(admin_client, make_task, clock):
    clock.at(NOON - timedelta(days=3))
    old = make_task(title="three days ago")
    clock.at(NOON)
    new = make_task(title="just now")
    url = reverse("admin:tasks_taskhistory_changelist")
    for period, expected in (("hour", {new.pk}), ("day", {new.pk}), ("week", {old.pk, new.pk}), ("", {old.pk, new.pk})):
        page = admin_client.get(url + (f"?written={period}" if period else ""))
        assert page.status_code == 200
        assert {row.task_id for row in page.context["cl"].result_list} == expected, period


def test_duration_percentiles_of_the_latest_completed_tasks(make_task, clock):
    assert selectors.duration_percentiles(100) == {"count": 0, "p50": None, "p95": None, "p99": None}
    for seconds in range(1, 11):  # task i runs i seconds
        task = move(make_task(title=f"{seconds} s"), "queued")
        clock.at(NOON)
        move(task, "running")
        clock.at(NOON + timedelta(seconds=seconds))
        move(task, "completed")
    failed = move(make_task(title="failed"), "queued", "running")
    clock.at(NOON + timedelta(hours=1))
    move(failed, "failed")  # not a completed task: not counted
    assert selectors.duration_percentiles(100) == {"count": 10, "p50": 5.0, "p95": 10.0, "p99": 10.0}
    # The sample is the latest completed tasks by creation: the 3 created last ran 8, 9 and 10 s.
    assert selectors.duration_percentiles(3) == {"count": 3, "p50": 9.0, "p95": 10.0, "p99": 10.0}


# --- Pages.


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


def staff_with(django_user_model, *codenames):
    user = django_user_model.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks", codename__in=codenames))
    return user


def test_the_workers_page_lists_live_workers_with_their_tasks(client, django_user_model, make_task):
    services.report_worker(report())
    services.report_worker(report(name="dead@box", pid=700))
    silence("dead@box", 60)
    task = running(make_task, "w1@box:100:101", title="crunching numbers")
    client.force_login(staff_with(django_user_model, "view_task"))
    url = reverse("admin:tasks_worker_changelist")
    html = client.get(url).content.decode()
    live_url = reverse("admin:tasks_worker_live")
    assert f'hx-get="{live_url}"' in html and 'hx-trigger="every 2s"' in html
    live = html.split('id="crux-gone-workers"')[0]
    assert 'data-worker="w1@box"' in live and 'data-worker="dead@box"' not in live
    assert reverse("admin:tasks_task_change", args=[task.pk]) in live and "crunching numbers" in live
    assert 'data-process="102"' in live  # the idle process
    assert 'data-worker="dead@box"' in html.split('id="crux-gone-workers"')[1]
    partial = client.get(live_url).content.decode()
    assert partial.lstrip().startswith('<div id="crux-workers"') and "<html" not in partial
    assert 'data-worker="w1@box"' in partial
    index = client.get(reverse("admin:index")).content.decode()
    assert f'href="{url}"' in index  # in the app list and on the dashboard


def test_the_workers_page_needs_the_view_permission(client, django_user_model):
    client.force_login(staff_with(django_user_model))
    assert client.get(reverse("admin:tasks_worker_changelist")).status_code == 403
    assert client.get(reverse("admin:tasks_worker_live")).status_code == 403
    assert client.get(reverse("crux_dashboard")).status_code == 403


def test_the_dashboard_refreshes_itself_and_shows_the_new_figures(client, superuser, make_task):
    from crux import dashboard

    dashboard.clear_cache()
    services.report_worker(report())
    move(make_task(title="waiting"), "queued")
    move(make_task(title="done"), "queued", "running", "completed")
    client.force_login(superuser)
    index = client.get(reverse("admin:index")).content.decode()
    assert f'hx-get="{reverse("crux_dashboard")}"' in index and 'hx-trigger="every 3s"' in index
    partial = client.get(reverse("crux_dashboard"))
    html = partial.content.decode()
    assert html.lstrip().startswith('<div class="crux-dash" id="crux-dashboard"') and "<html" not in html
    dash = partial.context["dash"]
    default = next(q for q in dash["queues"] if q["waiting"])
    assert default["waiting"] == 1
    assert dash["throughput"]["total"] == 1 and dash["durations"]["count"] == 1 and dash["workers_alive"] == 1
    assert 'id="crux-workers-count">1<' in html
    dashboard.clear_cache()


# --- The worker's side: a real worker reports itself, and a failing database never stops it.


@pytest.mark.slow
def test_a_real_worker_reports_itself_and_a_clean_shutdown_marks_it_stopped(cluster):
    cluster.env["WORKER_HEARTBEAT_SECONDS"] = "0.5"
    worker = cluster.worker(2)
    test_worker.wait_for(lambda: Worker.objects.filter(pid=worker.pid).exists(), cluster, "the first report", 90)
    row = Worker.objects.get(pid=worker.pid)
    assert row.name.startswith("w0@") and row.concurrency == 2 and row.stopped_at is None
    assert sorted(row.pool_pids) == sorted(test_worker.pool_children(worker))
    assert TEST_QUEUE in row.queues and "crux.housekeeping" not in row.queues
    first_beat = row.last_heartbeat
    test_worker.wait_for(
        lambda: Worker.objects.get(pk=row.pk).last_heartbeat > first_beat, cluster, "a later heartbeat", 30
    )
    worker.send_signal(signal.SIGTERM)  # a warm shutdown
    worker.wait(timeout=60)
    stopped = Worker.objects.get(pk=row.pk)
    assert stopped.stopped_at is not None
    assert [w.worker.pk for w in selectors.live_workers()] == []


def test_a_failing_registry_write_is_logged_once_and_never_raised(caplog):
    from django.db import OperationalError

    from crux.celery import WorkerRegistry

    step = WorkerRegistry(None)
    calls = []

    def write(outcome):
        calls.append(outcome)
        if outcome == "fail":
            raise OperationalError("database is locked")

    for outcome in ("fail", "fail", "ok", "fail"):
        step._guarded(write, outcome)
    assert calls == ["fail", "fail", "ok", "fail"]
    messages = [r.getMessage() for r in caplog.records if r.name == "crux.celery"]
    assert messages == [
        "worker registry: write failed; retrying every period",
        "worker registry: write works again",
        "worker registry: write failed; retrying every period",
    ]
