"""Backup, drop, restore; export; import of the old system's Redis records."""

import gzip
import json
import uuid
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token

from persistence.backup import BackupError, backup, load_backup, rotate
from tasks import db_triggers, services
from tasks.audit import Channel
from tasks.execution import execute
from tasks.models import CeleryResult, Task
from tasks.selectors import verify_audit_chains


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    return settings.BACKUP_DIR


def run(command, *args):
    out, err = StringIO(), StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def seed(user):
    for i in range(4):
        task = services.submit_task(
            owner=user, actor=user, channel=Channel.API, title=f"task {i}", handler="agent_demo",
            request_payload={"prompt": f"p{i}", "delay": 0}, metadata={"big": 1e20, "i": i},
        )  # fmt: skip
        if i < 3:
            execute(str(task.pk), worker_id="celery@test:1")
    services.soft_delete(task.pk, user=user, channel=Channel.API, reason="not needed")


def drop_everything():
    """What DROP DATABASE + migrate leaves: empty tables (the triggers go with them)."""
    db_triggers.uninstall(connection)
    call_command("flush", interactive=False, verbosity=0)
    db_triggers.install(connection)
    assert Task.objects.count() == 0


@pytest.mark.parametrize("fmt", ["json", "sqlite"])
def test_backup_drop_restore_gives_an_identical_export(live_db, user, fmt):
    if fmt == "sqlite" and connection.vendor != "sqlite":
        pytest.skip("the online-backup format is SQLite's")
    seed(user)
    before = run("export", "--include-deleted")[1]
    assert len(before.splitlines()) == 4
    code, out, _ = run("backup", "--format", fmt)
    assert code == 0, out
    path = Path(out.split()[1])
    assert path.exists() and Path(f"{path}.sha256").exists()
    drop_everything()
    assert load_backup(path) > 0
    after = run("export", "--include-deleted")[1]
    assert after == before
    assert list(verify_audit_chains()) == []
    with pytest.raises(BackupError, match="already holds tasks"):
        load_backup(path)


def test_a_json_backup_holds_each_row_once_under_its_concrete_model(live_db, user):
    Token.objects.create(user=user)
    CeleryResult.objects.store_result("application/json", "utf-8", "r.1", '"done"', "SUCCESS")
    code, out, _ = run("backup", "--format", "json")
    assert code == 0, out
    with gzip.open(out.split()[1], "rt") as lines:
        labels = Counter(json.loads(line).get("model") for line in lines)
    assert (labels["authtoken.token"], labels["django_celery_results.taskresult"]) == (1, 1), labels
    assert not {"authtoken.tokenproxy", "tasks.celeryresult"} & set(labels), "a proxy's rows written twice"


def test_a_corrupt_backup_is_refused(live_db, user, backups):
    seed(user)
    result = backup("json")
    result.path.write_bytes(result.path.read_bytes()[:-10] + b"0123456789")
    drop_everything()
    with pytest.raises(BackupError, match="corrupt"):
        load_backup(result.path)
    code, _, err = run("restore", str(result.path))
    assert code == 1 and "corrupt" in err


@pytest.mark.django_db
def test_rotation_keeps_the_newest_and_drops_the_expired(settings, backups):
    import os
    import time

    backups.mkdir(parents=True)
    settings.BACKUP_RETENTION_DAYS = 30
    old = [backups / f"crux-backup-2020010{i}T000000000000.jsonl.gz" for i in range(1, 4)]
    for path in old:
        path.write_bytes(b"x")
        Path(f"{path}.sha256").write_text("sha256:x")
        stamp = time.time() - 40 * 86400
        os.utime(path, (stamp, stamp))
    removed = rotate()
    assert removed == old[:2]
    assert old[2].exists()  # the newest backup is never rotated out, however old


@pytest.mark.django_db
def test_export_csv_and_filters(make_task, user):
    make_task(title="login page", role="frontend", provider="claude")
    make_task(title="billing job", role="backend", provider="openai")
    code, out, _ = run("export", "--format", "csv", "--roles", "frontend")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("id,title,description,role,state") and len(lines) == 2
    assert "login page" in lines[1] and ",alice," in lines[1]
    code, out, _ = run("export", "--search", "billing")
    assert json.loads(out)["task"]["fields"]["title"] == "billing job"
    code, _, err = run("export", "--states", "exploded")
    assert code == 2 and "--states" in err
    code, _, err = run("export", "--date-from", "yesterday")
    assert code == 2 and "--date-from" in err


@pytest.mark.django_db
def test_import_of_legacy_redis_jobs_is_idempotent(private_redis, user):
    done, running, purged, odd = (uuid.uuid4() for _ in range(4))
    old = private_redis.client
    old.hset(
        f"job:{done}",
        mapping={
            "job_id": str(done),
            "status": "completed",
            "created_at": "2025-07-23T22:00:00+00:00",
            "completed_at": "2025-07-24T00:34:55.853571+00:00",
            "progress": "1.0",
            "result": json.dumps({"answer": 42}),
            "request": json.dumps({"prompt": "fix login", "api_key": "sk-live-123456789abcdef"}),
            "mode": "enhanced",
        },
    )
    old.hset(f"job:{running}", mapping={"status": "running", "progress": "0.4", "current_phase": "thinking"})
    old.set(f"celery-task-meta-{purged}", json.dumps({"status": "SUCCESS", "result": {"ok": True},
                                                      "date_done": "2025-07-24T00:34:55.853571"}))  # fmt: skip
    old.hset(f"job:{odd}", mapping={"status": "exploded"})
    old.hset("job:not-a-uuid", mapping={"status": "completed"})

    code, out, _ = run("import_redis_jobs", "--url", private_redis.url, "--dry-run")
    assert code == 1 and "would import 3" in out and Task.objects.count() == 0
    code, out, err = run("import_redis_jobs", "--url", private_redis.url, "--owner", "alice")
    assert code == 1 and "imported 3" in out and f"job:{odd}: unknown status 'exploded'" in err
    task = Task.objects.get(pk=done)
    assert (task.state, task.result, task.owner, task.title) == ("completed", {"answer": 42}, user, "fix login")
    assert task.request_payload["api_key"] == "[REDACTED]"
    assert f"{task.completed_at:%Y-%m-%d %H:%M:%S.%f}" == "2025-07-24 00:34:55.853571"
    row = task.history.get()
    assert (row.event, row.channel, row.actor) == ("created", "command", "ops:import")
    assert row.reason == f"imported from legacy Redis job:{done}"
    assert Task.objects.get(pk=running).state == "interrupted"
    assert Task.objects.get(pk=purged).result == {"ok": True}
    code, out, _ = run("import_redis_jobs", "--url", private_redis.url)
    assert "imported 0, already present 3" in out
    assert Task.objects.count() == 3
    assert run("import_redis_jobs", "--url", private_redis.url, "--owner", "nobody")[0] == 2


def test_the_daily_backup_job_writes_a_backup(live_db, user):
    from persistence.tasks import daily_backup

    seed(user)
    path = Path(daily_backup())
    assert path.exists() and path.suffix == (".sqlite3" if connection.vendor == "sqlite" else ".gz")


@pytest.mark.django_db
def test_an_online_sqlite_backup_refuses_to_run_inside_a_transaction():
    if connection.vendor != "sqlite":
        pytest.skip("the online-backup format is SQLite's")
    with pytest.raises(BackupError, match="inside a transaction"):
        backup("sqlite")
