"""Restore drills (each backup restored into a scratch database and verified) and the second backup location."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from crux.dashboard import clear_cache
from persistence.backup import backup, rotate
from persistence.drills import check_drills, run_drill
from persistence.models import BackupDrill, DrillTrigger
from persistence.tasks import daily_backup
from retention.models import PurgeLedger
from retention.services import purge
from tasks import services
from tasks.audit import Channel, audited
from tasks.execution import execute
from tasks.models import Task
from tasks.records import checksum
from tasks.selectors import verify_audit_chains
from tests.api_support import client_for
from tests.conftest import RUN_PREFIX, TEST_QUEUE, child_database_url
from tests.persistence.test_backup import drop_everything
from tests.retention.test_retention import run

FORMATS = ["json", "sqlite"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    return settings.BACKUP_DIR


@pytest.fixture
def copies(settings, tmp_path):
    """A second location: the ``backups_copy`` storage alias, a directory of its own."""
    location = tmp_path / "copies"
    settings.STORAGES = {
        **settings.STORAGES,
        "backups_copy": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": location}},
    }
    return location


def seed(user, count=3):
    for i in range(count):
        task = services.submit_task(
            owner=user, actor=user, channel=Channel.API, title=f"task {i}", handler="agent_demo",
            request_payload={"prompt": f"p{i}", "delay": 0},
        )  # fmt: skip
        if i < count - 1:
            execute(str(task.pk), worker_id="celery@test:1")


def scratch_databases() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{connection.settings_dict['NAME']}%"]
        )
        return [name for (name,) in cursor.fetchall() if "_drill_" in name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_good_backup_passes_its_drill_and_the_drill_is_recorded(live_db, user, fmt):
    if fmt == "sqlite" and connection.vendor != "sqlite":
        pytest.skip("the online-backup format is SQLite's")
    seed(user)
    result = backup(fmt)
    drill = run_drill(result.path, trigger=DrillTrigger.AFTER_BACKUP)
    assert drill.ok, drill.problems
    assert drill.problems == []
    assert drill.counts["tasks_task"] == {"recorded": 3, "restored": 3}
    assert drill.counts["tasks_taskhistory"]["restored"] == drill.counts["tasks_taskhistory"]["recorded"] > 3
    assert (drill.backup_name, drill.checksum) == (result.path.name, result.checksum)
    assert BackupDrill.objects.get() == drill and drill.finished_at >= drill.started_at
    assert Task.objects.count() == 3  # the live database was not touched
    if connection.vendor == "postgresql":
        assert scratch_databases() == []


def test_a_corrupted_backup_fails_its_drill_and_raises_the_alert(live_db, user, webhook, caplog):
    seed(user)
    result = backup("json")
    data = result.path.read_bytes()
    result.path.write_bytes(data[:-10] + b"0123456789")
    with caplog.at_level("ERROR", logger="persistence.drills"):
        drill = run_drill(result.path)
    assert not drill.ok
    assert "corrupt" in drill.problems[0]
    assert f"restore drill of backup {result.path.name} FAILED" in caplog.text
    assert webhook and webhook[0]["event"] == "backup_drill" and result.path.name in webhook[0]["text"]
    assert BackupDrill.objects.get().ok is False


def test_a_backup_that_does_not_restore_fails_its_drill_though_its_checksum_matches(live_db, user, webhook, caplog):
    """Damaged before its checksum was taken (the sidecar agrees with it): only the restore finds out."""
    seed(user)
    result = backup("json")
    result.path.write_bytes(b"\x1f\x8b not a gzip stream")
    Path(f"{result.path}.sha256").write_text(f"{checksum(result.path)}  {result.path.name}\n")
    with caplog.at_level("ERROR", logger="persistence.drills"):
        code, out = run("drill_backup", str(result.path))
    assert code == 1, out
    assert "FAILED" in out and "scratch restore failed" in out
    assert "FAILED" in caplog.text and webhook[0]["event"] == "backup_drill"
    if connection.vendor == "postgresql":
        assert scratch_databases() == []


def test_the_backup_job_drills_the_backup_it_wrote(live_db, user):
    seed(user, count=1)
    path = Path(daily_backup())
    drill = BackupDrill.objects.get()
    assert (drill.backup_name, drill.trigger, drill.ok) == (path.name, DrillTrigger.AFTER_BACKUP, True)


def test_drill_backup_drills_the_newest_backup_by_default(live_db, user):
    seed(user, count=1)
    backup("json")
    newest = backup("json")
    code, out = run("drill_backup")
    assert code == 0, out
    assert f"{newest.path.name} passed" in out
    assert BackupDrill.objects.get().trigger == DrillTrigger.COMMAND


def test_rotate_keeps_the_newest_backup_that_passed_its_drill_whatever_its_age(db, backups, settings):
    backups.mkdir(parents=True)
    names = [f"crux-backup-2026010{day}T000000000000.jsonl.gz" for day in (1, 2, 3)]
    old = (timezone.now() - timedelta(days=settings.BACKUP_RETENTION_DAYS + 5)).timestamp()
    for name in names:
        path = backups / name
        path.write_bytes(b"x")
        Path(f"{path}.sha256").write_text("sha256:0  x\n")
        os.utime(path, (old, old))
    now = timezone.now()
    for name, ok in zip(names, (True, False, False), strict=True):
        BackupDrill.objects.create(
            started_at=now, finished_at=now, duration_seconds=1, backup_name=name, ok=ok, trigger=DrillTrigger.COMMAND
        )
    removed = rotate()
    assert sorted(p.name for p in removed) == names[1:]
    assert sorted(p.name for p in backups.iterdir()) == [names[0], f"{names[0]}.sha256"]


def test_a_backup_missing_here_is_restored_from_the_second_location(live_db, user, copies, backups):
    seed(user)
    before = run("export", "--include-deleted")[1]
    result = backup("json")
    assert result.copied and (copies / result.path.name).read_bytes() == result.path.read_bytes()
    assert (copies / f"{result.path.name}.manifest.json").exists()
    for path in backups.glob("crux-backup-*"):
        path.unlink()
    drop_everything()
    code, out = run("restore", str(result.path))
    assert code == 0, out
    assert run("export", "--include-deleted")[1] == before
    assert list(verify_audit_chains()) == []


def test_a_purged_task_whose_archive_is_missing_here_is_restored_from_the_second_location(live_db, make_task, copies):
    task = make_task(title="to purge")
    for step in ("queued", "running", "completed"):
        services.transition(task.pk, step, actor="system:test", channel=Channel.WORKER, reason=step)
    task = Task.objects.get(pk=task.pk)
    task.completed_at = timezone.now() - timedelta(days=30)
    with audited("system:test", channel=Channel.SYSTEM, reason="age the task for the test"):
        task.save()
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 1
    archive = Path(PurgeLedger.objects.get(task_id=task.pk).archive_file)
    assert (copies / "purged" / archive.name).read_bytes() == archive.read_bytes()
    archive.unlink()
    code, out = run("restore", "--task", str(task.pk))
    assert code == 0, out
    assert Task.objects.get(pk=task.pk).title == "to purge" and archive.exists()


@pytest.fixture
def drill_queue(settings, backups, tmp_path):
    """The housekeeping queue, one of this run's own on the test broker, and a real worker consuming it (started by
    calling the fixture's value) whose backups are the test's; stopped at the end."""
    settings.CELERY_HOUSEKEEPING_QUEUE = f"{TEST_QUEUE}.housekeeping"  # the run's cleanup deletes it
    started: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"

    def start() -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crux.settings",
            "DATABASE_URL": child_database_url(),
            "BACKUP_DIR": str(backups),
            "CELERY_HOUSEKEEPING_QUEUE": settings.CELERY_HOUSEKEEPING_QUEUE,
        }
        args = ["-P", "solo", "-n", f"drills-{RUN_PREFIX}@localhost", "-Q", settings.CELERY_HOUSEKEEPING_QUEUE]
        with open(log, "ab") as out:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "crux", "worker", *args, "--without-gossip", "-l", "INFO"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    yield start, log
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_the_admin_button_needs_the_permission_and_queues_a_drill_the_housekeeping_worker_runs(
    live_db, user, staff, client, drill_queue
):
    start_worker, log = drill_queue
    url = "/admin/persistence/backupdrill/run/"
    client.force_login(staff)
    assert client.post(url).status_code == 403
    staff.user_permissions.add(
        Permission.objects.get(codename="run_backupdrill"), Permission.objects.get(codename="view_backupdrill")
    )
    page = client.get("/admin/persistence/backupdrill/")
    assert page.status_code == 200 and b"crux-run-drill" in page.content
    answer = client.post(url, follow=True)
    assert b"No drill queued: there is no backup to drill yet." in answer.content
    seed(user, count=1)
    written = backup("json").path
    answer = client.post(url)
    assert answer.status_code == 302 and answer["Location"] == "/admin/persistence/backupdrill/"
    assert f"Drill of {written.name} queued" in client.get(answer["Location"]).content.decode()
    assert not BackupDrill.objects.exists(), "the request only queued it"
    start_worker()
    deadline = time.monotonic() + 120
    while not BackupDrill.objects.exists():
        assert time.monotonic() < deadline, f"no drill recorded within 120 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    drill = BackupDrill.objects.get()
    assert drill.ok, drill.problems
    assert (drill.backup_name, drill.trigger, drill.actor) == (written.name, DrillTrigger.ADMIN, staff.username)


def test_the_stats_the_metrics_and_the_dashboard_show_the_last_drill(live_db, user, staff, client, admin_client):
    seed(user, count=1)
    drill = run_drill(backup("json").path)
    stats = client_for(staff).get("/api/persistence/stats")
    assert stats.status_code == 200
    body = stats.json()
    assert body["last_drill"]["ok"] is True and body["last_drill"]["backup"] == drill.backup_name
    assert body["last_drill_success_at"] is not None
    client.force_login(staff)
    metrics = client.get("/metrics").content.decode()
    assert "crux_backup_drill_last_ok 1.0" in metrics
    line = next(line for line in metrics.splitlines() if line.startswith("crux_backup_drill_last_success_timestamp"))
    assert float(line.split()[1]) == pytest.approx(drill.finished_at.timestamp())
    clear_cache()
    dashboard = admin_client.get("/admin/dashboard/").content.decode()
    assert 'id="crux-drill-result">passed' in dashboard and drill.backup_name in dashboard


def test_no_drill_passed_within_the_window_raises_the_alert(db, settings, webhook, caplog):
    settings.BACKUP_DRILL_MAX_AGE_SECONDS = 3600
    assert check_drills() is None  # nothing was ever backed up nor drilled
    long_ago = timezone.now() - timedelta(hours=3)
    BackupDrill.objects.create(
        started_at=long_ago, finished_at=long_ago, duration_seconds=1, backup_name="b", ok=True, trigger="command"
    )
    with caplog.at_level("ERROR", logger="persistence.drills"):
        message = check_drills()
    assert message and "no restore drill has passed since" in caplog.text
    assert webhook[0]["event"] == "backup_drill"
    recent = timezone.now()
    BackupDrill.objects.create(
        started_at=recent, finished_at=recent, duration_seconds=1, backup_name="c", ok=True, trigger="command"
    )
    assert check_drills() is None
