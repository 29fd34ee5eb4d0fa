"""Periodic schedules: staff define them in the admin (a bad payload refused with field messages, deletion authorized
and confirmed), each firing submits a normal task attributed to its schedule, and exactly one beat sends, even when
two run: real beats, worker and a private broker, on the test's database."""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.models import SchedulerLease, Task, TaskSchedule
from tests.tasks import test_worker
from tests.tasks.test_worker import HOUSEKEEPING_QUEUE, wait_for

cluster = test_worker.cluster  # the real workers, beat and private broker of tests/tasks/test_worker.py

SCHEDULE_PERMISSIONS = ("add_taskschedule", "change_taskschedule", "view_taskschedule", "delete_taskschedule")


def scheduler_staff(django_user_model, *codenames: str, username: str = "scheduler"):
    user = django_user_model.objects.create_user(username, password="pw-scheduler-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks", codename__in=codenames))
    return user


def every(seconds: int) -> IntervalSchedule:
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return interval


def make_schedule(owner, **fields) -> TaskSchedule:
    fields.setdefault("name", "nightly-echo")
    fields.setdefault("title", "echo from a schedule")
    fields.setdefault("handler", "echo")
    fields.setdefault("payload", {"message": "hello"})
    if "crontab" not in fields:
        fields.setdefault("interval", every(60))
    return services.save_schedule(TaskSchedule(owner=owner, **fields))


def form_data(**values) -> dict:
    data = {
        "name": "every-minute",
        "title": "echo every minute",
        "handler": "echo",
        "payload": '{"message": "tick"}',
        "interval": "",
        "crontab": "",
        "enabled": "on",
        "queue": "",
        "priority": "",
        "max_attempts": "",
        "soft_time_limit": "",
        "time_limit": "",
        "_save": "Save",
    }
    data.update(values)
    return data


def fired(schedule: TaskSchedule) -> list[Task]:
    return list(Task.objects.filter(metadata__schedule_id=schedule.pk).order_by("created_at"))


def gaps(times: list) -> list[float]:
    """Seconds between successive firings."""
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


# --- In-process: the service, the firing, the admin, the lease.


def test_saving_a_schedule_derives_its_beat_entry_and_firing_submits_an_attributed_task(staff, db):
    schedule = make_schedule(staff, priority=7, max_attempts=2)
    periodic = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (periodic.task, periodic.kwargs, periodic.interval_id, periodic.enabled) == (
        services.FIRE_SCHEDULE,
        f'{{"schedule_id": {schedule.pk}}}',
        schedule.interval_id,
        True,
    )

    task, created = services.fire_schedule(schedule.pk, firing_id="message-1")
    assert created and task is not None
    assert (task.owner, task.handler, task.request_payload, task.priority, task.max_attempts, task.state) == (
        staff,
        "echo",
        {"message": "hello"},
        7,
        2,
        "queued",
    )
    assert task.metadata == {"schedule_id": schedule.pk, "schedule": "nightly-echo"}
    row = task.history.get()
    assert (row.actor, row.channel) == ("schedule:nightly-echo", Channel.SCHEDULE)
    assert "nightly-echo" in row.reason and f"#{schedule.pk}" in row.reason
    again, created = services.fire_schedule(schedule.pk, firing_id="message-1")
    assert again == task and not created, "a redelivered firing submits no second task"


def test_a_schedule_disabled_or_deleted_before_its_firing_runs_submits_nothing(staff, db):
    schedule = make_schedule(staff)
    schedule.enabled = False
    services.save_schedule(schedule)
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled is False
    assert services.fire_schedule(schedule.pk, firing_id="m") == (None, False)
    services.delete_schedule(schedule)
    assert not PeriodicTask.objects.filter(name__startswith="crux.schedule:").exists()
    assert services.fire_schedule(schedule.pk, firing_id="m2") == (None, False)
    assert not Task.objects.exists()


def test_the_service_refuses_a_bad_payload_and_a_schedule_with_two_timings(staff, db):
    with pytest.raises(InvalidTaskData) as info:
        make_schedule(staff, handler="sleep", payload={"seconds": "soon"})
    assert "seconds" in info.value.errors["payload"]
    with pytest.raises(InvalidTaskData) as info:
        make_schedule(staff, crontab=CrontabSchedule.objects.create(), interval=every(5))
    assert "__all__" in info.value.errors
    with pytest.raises(InvalidTaskData) as info:
        make_schedule(staff, handler="nope")
    assert "handler" in info.value.errors
    # A queue no worker is meant to consume would refuse every firing: refused when the schedule is saved.
    for queue in ("no-such-queue", HOUSEKEEPING_QUEUE):
        with pytest.raises(InvalidTaskData) as info:
            make_schedule(staff, queue=queue)
        assert "queue" in info.value.errors
    assert not TaskSchedule.objects.exists() and not PeriodicTask.objects.exists()


def test_an_interval_schedule_with_a_bad_payload_is_refused_in_the_admin_with_a_field_message(
    client, django_user_model
):
    client.force_login(scheduler_staff(django_user_model, *SCHEDULE_PERMISSIONS))
    interval = every(30)
    response = client.post(
        reverse("admin:tasks_taskschedule_add"),
        form_data(handler="sleep", payload='{"seconds": "soon", "steps": 0}', interval=interval.pk),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "payload" in errors, errors
    assert any(message.startswith("seconds: ") for message in errors["payload"]), errors
    assert any(message.startswith("steps: ") for message in errors["payload"]), errors
    assert not TaskSchedule.objects.exists() and not PeriodicTask.objects.exists()

    response = client.post(reverse("admin:tasks_taskschedule_add"), form_data(payload="[1, 2]", interval=interval.pk))
    assert response.status_code == 200 and "payload" in response.context["adminform"].form.errors
    response = client.post(reverse("admin:tasks_taskschedule_add"), form_data(interval="", crontab=""))
    assert response.status_code == 200 and response.context["adminform"].form.non_field_errors()
    assert not TaskSchedule.objects.exists()


def test_deleting_a_schedule_needs_the_permission_and_the_confirmation_and_leaves_its_tasks(
    client, django_user_model, staff
):
    schedule = make_schedule(staff)
    task, _ = services.fire_schedule(schedule.pk, firing_id="m")
    url = reverse("admin:tasks_taskschedule_delete", args=[schedule.pk])

    client.force_login(scheduler_staff(django_user_model, "view_taskschedule", "change_taskschedule"))
    assert client.post(url, {"post": "yes"}).status_code == 403
    changelist = reverse("admin:tasks_taskschedule_changelist")
    action = {"action": "delete_selected", "_selected_action": [schedule.pk], "post": "yes"}
    client.post(changelist, action)
    assert TaskSchedule.objects.filter(pk=schedule.pk).exists(), "no delete permission, no delete"

    client.force_login(scheduler_staff(django_user_model, *SCHEDULE_PERMISSIONS, username="deleter"))
    response = client.post(url, {})
    assert response.status_code == 200 and "Are you sure" in response.content.decode()
    action.pop("post")
    assert client.post(changelist, action).status_code == 200
    assert TaskSchedule.objects.filter(pk=schedule.pk).exists(), "an unconfirmed POST deletes nothing"

    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not TaskSchedule.objects.exists()
    assert not PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()
    assert Task.objects.filter(pk=task.pk).exists(), "the tasks it submitted stay"


def test_the_schedule_pages_render_and_beats_own_periodic_task_admin_is_read_only(client, django_user_model, staff):
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(superuser)
    schedule = make_schedule(staff)
    services.fire_schedule(schedule.pk, firing_id="m")
    for url in (
        reverse("admin:tasks_taskschedule_changelist"),
        reverse("admin:tasks_taskschedule_add"),
        reverse("admin:tasks_taskschedule_change", args=[schedule.pk]),
        reverse("admin:django_celery_beat_intervalschedule_add"),
        reverse("admin:django_celery_beat_crontabschedule_add"),
        reverse("admin:django_celery_beat_periodictask_change", args=[schedule.periodic_task_id]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
    page = client.get(reverse("admin:tasks_taskschedule_changelist")).content.decode()
    assert "nightly-echo" in page and "every 60 seconds" in page
    assert client.get(reverse("admin:django_celery_beat_periodictask_changelist")).status_code == 200
    assert client.get(reverse("admin:django_celery_beat_periodictask_add")).status_code == 403
    change = reverse("admin:django_celery_beat_periodictask_change", args=[schedule.periodic_task_id])
    client.post(change, {"name": "x", "task": "celery.backend_cleanup", "enabled": "on"})
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).task == services.FIRE_SCHEDULE


def test_one_holder_has_the_scheduler_lease_until_it_expires_or_is_released(db):
    # Long enough that a loaded machine cannot let it lapse between two calls; only the last renewal is short.
    assert services.hold_scheduler_lease("a", 5)
    assert not services.hold_scheduler_lease("b", 5)
    assert services.hold_scheduler_lease("a", 0.5), "the holder renews"
    time.sleep(0.7)
    assert services.hold_scheduler_lease("b", 30), "an expired lease is taken over"
    assert not services.hold_scheduler_lease("a", 30)
    services.release_scheduler_lease("b")
    assert services.hold_scheduler_lease("a", 30)
    assert SchedulerLease.objects.get().holder == "a"


def test_a_housekeeping_period_of_a_fraction_of_a_second_is_read_back_as_it_was_set(db):
    from crux.celery import app
    from crux.scheduler import Entry

    for seconds in (0.5, 0.25, 5.0):
        Entry.from_entry(f"every-{seconds}", app=app, task="crux.recovery_sweep", schedule=seconds)
        stored = PeriodicTask.objects.get(name=f"every-{seconds}")
        assert stored.schedule.run_every == timedelta(seconds=seconds), stored.interval


def test_a_housekeeping_entry_taken_out_of_the_settings_stops_running(staff, db):
    from crux.celery import app
    from crux.scheduler import GuardedScheduler

    schedule = make_schedule(staff)
    for name, entry in app.conf.beat_schedule.items():
        PeriodicTask.objects.create(name=name, task=entry["task"], interval=every(60))
    PeriodicTask.objects.create(name="auto-purge", task="crux.auto_purge", interval=every(3600))
    scheduler = GuardedScheduler(app=app, lazy=True)
    assert scheduler.remove_stale_entries() == ["auto-purge"]
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert names == {*app.conf.beat_schedule, f"crux.schedule:{schedule.pk}"}


# --- Real beats, worker and broker.


def beat(cluster, name: str):
    return cluster._spawn(name, ["beat", "-l", "INFO"])


def housekeeping_worker(cluster) -> None:
    """The worker of the housekeeping queue, ready before any beat sends: firings are submitted as they are sent."""
    log = cluster.tmp_path / f"w{len(cluster.processes)}.log"
    cluster.worker(2, HOUSEKEEPING_QUEUE)
    wait_for(lambda: log.exists() and " ready." in log.read_text(), cluster, "the housekeeping worker", timeout=20)


def lease_holder_pid() -> int | None:
    lease = SchedulerLease.objects.filter(expires_at__gt=timezone.now()).first()
    return int(lease.holder.split(":")[1]) if lease else None


@pytest.mark.slow
def test_a_crontab_schedule_created_in_the_admin_fires(cluster, client, django_user_model):
    staffer = scheduler_staff(django_user_model, *SCHEDULE_PERMISSIONS)
    client.force_login(staffer)
    crontab = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    response = client.post(reverse("admin:tasks_taskschedule_add"), form_data(crontab=crontab.pk))
    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = TaskSchedule.objects.get(name="every-minute")
    assert schedule.owner == staffer and schedule.crontab == crontab
    quiet = make_schedule(staffer, name="disabled", crontab=crontab, enabled=False)
    # Due at once rather than at the next minute boundary: its last run was two minutes ago.
    PeriodicTask.objects.filter(crontab=crontab).update(last_run_at=timezone.now() - timedelta(minutes=2))

    cluster.worker(1, HOUSEKEEPING_QUEUE)
    beat(cluster, "beat")
    (task, *_) = wait_for(lambda: fired(schedule), cluster, "the crontab schedule fired", timeout=25)

    assert (task.owner, task.title, task.request_payload, task.state) == (
        staffer,
        "echo every minute",
        {"message": "tick"},
        "queued",
    )
    row = task.history.get()
    assert (row.actor, row.channel, row.event) == ("schedule:every-minute", "schedule", "created")
    assert "every-minute" in row.reason
    assert not fired(quiet), "a disabled schedule does not fire"
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).last_run_at > timezone.now() - timedelta(seconds=30)


@pytest.mark.slow
def test_two_beats_started_together_fire_each_job_once(cluster, staff):
    cluster.env.update({"SCHEDULER_LEASE_SECONDS": "3", "RECOVERY_SWEEP_SECONDS": "1"})
    schedule = make_schedule(staff, name="every-second", interval=every(1))
    housekeeping_worker(cluster)
    beats = [beat(cluster, "beat-a"), beat(cluster, "beat-b")]
    wait_for(lambda: fired(schedule), cluster, "the first firing", timeout=20)
    sweeps_before, started = cluster.sweeps(), timezone.now()
    time.sleep(7)
    ended = timezone.now()
    sweeps, elapsed = cluster.sweeps() - sweeps_before, (ended - started).total_seconds()
    firings = [t.created_at for t in fired(schedule)]
    window = [at for at in firings if started <= at <= ended]
    between = gaps(firings)

    assert elapsed - 2 <= len(window) <= elapsed + 1, (len(window), elapsed, between)
    assert min(between) > 0.5, f"two firings for one slot: {between}"
    assert elapsed - 4 <= sweeps <= elapsed + 2, f"{sweeps} recovery sweeps (every 1 s) in {elapsed:.1f} s"

    holder = lease_holder_pid()
    assert holder in {b.pid for b in beats}
    logs = {
        b.pid: (cluster.tmp_path / f"{name}.log").read_text()
        for b, name in zip(beats, ["beat-a", "beat-b"], strict=True)
    }
    standby = next(pid for pid in logs if pid != holder)
    assert logs[standby].count("stands by") == 1, "the standby says so once, not every tick"
    assert "holds the scheduler lease" in logs[holder]


@pytest.mark.slow
def test_killing_the_leader_beat_lets_the_standby_take_over_within_the_lease(cluster, staff):
    lease = 3.0
    cluster.env.update({"SCHEDULER_LEASE_SECONDS": str(lease)})
    schedule = make_schedule(staff, name="every-second", interval=every(1))
    housekeeping_worker(cluster)
    beats = {b.pid: b for b in (beat(cluster, "beat-a"), beat(cluster, "beat-b"))}
    wait_for(lambda: len(fired(schedule)) >= 2, cluster, "firings by the first leader", timeout=20)
    leader = lease_holder_pid()
    assert leader in beats

    os.killpg(leader, signal.SIGKILL)
    beats[leader].wait(timeout=10)
    killed_at, before = timezone.now(), len(fired(schedule))
    standby = wait_for(
        lambda: (pid := lease_holder_pid()) not in (None, leader) and pid, cluster, "the takeover", timeout=lease + 5
    )
    assert standby in beats and standby != leader
    wait_for(lambda: len(fired(schedule)) >= before + 3, cluster, "firings by the new leader", timeout=lease + 8)
    after = [t.created_at for t in fired(schedule) if t.created_at > killed_at]
    assert (after[0] - killed_at).total_seconds() < lease + 3, "the standby took over within the lease"
    between = gaps(after)
    assert min(between) > 0.5, f"the takeover fired its backlog at once: {between}"


@pytest.mark.slow
@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="a SQLite writer stopped inside a transaction holds the database's one write lock: every writer waits",
)
def test_a_leader_paused_past_its_lease_sends_nothing_once_resumed(cluster, staff):
    lease = 2.0
    cluster.env.update({"SCHEDULER_LEASE_SECONDS": str(lease)})
    schedule = make_schedule(staff, name="every-second", interval=every(1))
    housekeeping_worker(cluster)
    beats = {b.pid: b for b in (beat(cluster, "beat-a"), beat(cluster, "beat-b"))}
    wait_for(lambda: len(fired(schedule)) >= 2, cluster, "firings by the first leader", timeout=20)
    leader = lease_holder_pid()
    assert leader in beats

    os.killpg(leader, signal.SIGSTOP)
    try:
        wait_for(lambda: lease_holder_pid() not in (None, leader), cluster, "the takeover", timeout=lease + 5)
        time.sleep(1.5)
    finally:
        os.killpg(leader, signal.SIGCONT)
    resumed = timezone.now()
    time.sleep(3)

    assert lease_holder_pid() not in (None, leader), "the resumed beat did not take the lease back"
    between = gaps([t.created_at for t in fired(schedule)])
    assert min(between) > 0.5, f"two beats sent one slot: {between}"
    assert len([t for t in fired(schedule) if t.created_at > resumed]) >= 2, "the new leader goes on sending"
    name = "beat-a" if beats[leader] is next(iter(beats.values())) else "beat-b"
    assert "stands by" in (cluster.tmp_path / f"{name}.log").read_text()
