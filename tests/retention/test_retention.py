"""Retention: purge only by policy, archive first, ledger always; breaker; restore; locate."""

import json
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from crux.locate import locate
from retention.archive import ArchiveError, read_entry
from retention.breaker import DeletionsSuspended, acknowledge
from retention.models import DeletionBreaker, DeletionEvent, PurgeLedger, RetentionPolicy
from retention.services import purge, unarchive_task
from tasks import services
from tasks.audit import Channel, audited
from tasks.exceptions import InvalidTaskData, TaskError
from tasks.models import METRIC_FIELDS, Task, TaskHistory, TaskOutput
from tasks.selectors import verify_audit_chains

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.MAX_TASKS_PER_PURGE = 10
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100
    return settings.BACKUP_DIR


def finished(make_task, state="completed", days_ago=10, **fields):
    """A task that reached ``state`` ``days_ago`` days ago, with an output and metrics."""
    task = make_task(**fields)
    path = {"completed": ["queued", "running", "completed"], "failed": ["queued", "running", "failed"]}
    for step in path.get(state, [state]):
        services.transition(task.pk, step, actor="system:test", channel=Channel.WORKER, reason=step)
    TaskOutput.objects.create(task=task, output_type="stdout", content=f"output of {task.title}")
    figures = {"iterations": 2, "total_tokens": 1234, "stop_reason": "evaluator_stop", "converged": True}
    Task.objects.filter(pk=task.pk).update(**figures)
    task = Task.objects.get(pk=task.pk)
    task.completed_at = timezone.now() - timedelta(days=days_ago)
    with audited("system:test", channel=Channel.SYSTEM, reason="age the task for the test"):
        task.save()
    return task


def run(command, *args):
    out, err = StringIO(), StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def test_a_dry_run_lists_and_deletes_nothing(make_task, backups):
    old = finished(make_task, title="old one")
    finished(make_task, title="recent one", days_ago=1)
    code, out = run("purge")
    assert code == 0 and "dry run, 1 task(s) would be archived" in out and str(old.pk) in out
    assert "completed-7d" in out
    assert Task.objects.count() == 2 and PurgeLedger.objects.count() == 0
    assert not backups.exists()


def test_a_confirmed_purge_archives_then_removes_and_leaves_a_ledger(make_task, user):
    old = finished(make_task, title="to purge")
    keep = finished(make_task, title="keep me", days_ago=1)
    report = purge(actor=user, channel=Channel.API, confirm=True)
    assert report.purged == 1 and not Task.objects.filter(pk=old.pk).exists()
    assert not TaskHistory.objects.filter(task_id=old.pk).exists()
    assert Task.objects.filter(pk=keep.pk).exists()
    entry = PurgeLedger.objects.get(task_id=old.pk)
    assert (entry.title, entry.state, entry.owner_username, entry.policy, entry.actor, entry.channel) == (
        "to purge",
        "completed",
        "alice",
        "completed-7d",
        "alice",
        "api",
    )
    assert Path(entry.archive_file).exists() and entry.archive_checksum.startswith("sha256:")
    assert DeletionEvent.objects.filter(kind="purge", task_count=1).count() == 1
    assert list(verify_audit_chains()) == []


def test_a_failing_archive_write_aborts_with_nothing_deleted(make_task, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the archive directory should be")
    settings.BACKUP_DIR = blocker / "backups"
    old = finished(make_task)
    with pytest.raises(ArchiveError):
        purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    assert Task.objects.filter(pk=old.pk).exists() and old.history.count() == 5
    assert PurgeLedger.objects.count() == 0
    code, out = run("purge", "--confirm")
    assert code == 1 and "nothing deleted" in out


def test_the_limit_holds(make_task):
    tasks = [finished(make_task, title=f"t{i}", days_ago=10 + i) for i in range(5)]
    report = purge(actor="ops:test", channel=Channel.COMMAND, confirm=True, limit=3)
    assert report.purged == 3 and Task.objects.count() == 2
    oldest_first = sorted(tasks, key=lambda t: t.created_at)[:3]
    assert set(PurgeLedger.objects.values_list("task_id", flat=True)) == {t.pk for t in oldest_first}
    with pytest.raises(InvalidTaskData):
        purge(actor="ops:test", channel=Channel.COMMAND, confirm=True, limit=11)
    assert run("purge", "--limit", "11")[0] == 2


def test_policies_never_and_soft_delete_grace(make_task, user):
    RetentionPolicy.objects.create(scope="completed", keep_days=None)
    finished(make_task, title="kept forever")
    failed = finished(make_task, state="failed", title="failed long ago", days_ago=40)
    trashed = make_task(title="trashed")
    services.soft_delete(trashed.pk, user=user, channel=Channel.API, reason="junk")
    report = purge(actor="ops:test", channel=Channel.COMMAND)
    assert [item["id"] for item in report.selected] == [str(failed.pk)]
    assert report.selected[0]["policy"] == "failed-30d"


def test_a_soft_deleted_task_is_purged_only_after_its_grace(make_task, user, settings):
    trashed = make_task(title="trashed")
    services.cancel(trashed.pk, actor=user, channel=Channel.API, reason="not needed")
    services.soft_delete(trashed.pk, user=user, channel=Channel.API, reason="junk")
    assert purge(actor="ops:test", channel=Channel.COMMAND).selected == []
    RetentionPolicy.objects.update_or_create(scope="soft_deleted", defaults={"keep_days": 0})
    RetentionPolicy.objects.update_or_create(scope="cancelled", defaults={"keep_days": None})
    report = purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    assert report.purged == 1 and PurgeLedger.objects.get().policy == "soft_deleted-0d"


def test_restoring_a_purged_task_brings_everything_back(make_task, user):
    old = finished(make_task, title="bring me back", metadata={"n": 1e20, "x": 0.1})
    before = {
        "history": list(TaskHistory.objects.filter(task=old).order_by("seq").values_list("hash", flat=True)),
        "output": old.outputs.get().content,
        "tokens": old.total_tokens,
    }
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    assert not Task.objects.filter(pk=old.pk).exists()
    result = unarchive_task(old.pk, actor=user, channel=Channel.API)
    assert result.outcome == "restored"
    task = Task.objects.get(pk=old.pk)
    hashes = list(TaskHistory.objects.filter(task=task).order_by("seq").values_list("hash", flat=True))
    assert hashes[:-1] == before["history"]
    last = task.history.latest("seq")
    assert (last.event, last.actor, last.channel) == ("unarchive", "alice", "api")
    assert "restored from purge archive" in last.reason
    assert task.outputs.get().content == before["output"] and task.total_tokens == before["tokens"]
    assert task.metadata == {"n": 1e20, "x": 0.1}
    assert list(verify_audit_chains()) == []
    assert PurgeLedger.objects.get(task_id=old.pk).restored_by == "alice"
    assert unarchive_task(old.pk, actor=user, channel=Channel.API).outcome == "already restored"
    assert task.history.count() == 6
    code, out = run("restore", "--task", str(old.pk))
    assert code == 0 and "already restored" in out


def test_an_archive_entry_from_when_metrics_had_their_own_table_is_reinstated_with_them(make_task, user):
    """Archives written before migration 0017 hold a task's figures in a row of their own, beside the task's."""
    old = finished(make_task, title="archived with a metrics row")
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    ledger = PurgeLedger.objects.get(task_id=old.pk)
    entry = read_entry(Path(ledger.archive_file), old.pk, ledger.archive_checksum)
    figures = {name: entry["task"]["fields"].pop(name) for name in METRIC_FIELDS}
    assert figures["total_tokens"] == 1234 and figures["stop_reason"] == "evaluator_stop"
    metrics_row = {"model": "tasks.taskmetrics", "pk": str(old.pk), "fields": {**figures, "updated_at": "x"}}
    with transaction.atomic():
        task = services.reinstate(
            {**entry, "metrics": metrics_row},
            history_head=(ledger.history_count, ledger.history_head),
            actor=user,
            channel=Channel.COMMAND,
            reason="an older archive",
        )
    task.refresh_from_db()
    assert {name: getattr(task, name) for name in METRIC_FIELDS} == figures
    assert list(verify_audit_chains()) == []


def test_restore_refuses_a_live_task_without_force_and_archives_it_with_force(make_task, user):
    old = finished(make_task)
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    unarchive_task(old.pk, actor=user, channel=Channel.API)
    PurgeLedger.objects.filter(task_id=old.pk).update(restored_at=None)  # as if restored by other means
    with pytest.raises(TaskError, match="refusing to overwrite"):
        unarchive_task(old.pk, actor=user, channel=Channel.API)
    assert run("restore", "--task", str(old.pk))[0] == 1
    result = unarchive_task(old.pk, actor=user, channel=Channel.API, force=True)
    assert result.outcome == "restored"
    assert PurgeLedger.objects.filter(task_id=old.pk, policy="overwritten-by-restore").count() == 1
    assert list(verify_audit_chains()) == []


def test_restore_of_an_unknown_task_and_bad_usage(db):
    assert run("restore", "--task", "5b6b3a1e-0000-4000-8000-000000000000")[0] == 1
    assert run("restore", "--task", "nope")[0] == 2
    assert run("restore")[0] == 2


def test_the_breaker_trips_at_the_threshold_and_refuses_until_acknowledged(make_task, user, settings, caplog):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 3
    tasks = [make_task(title=f"t{i}") for i in range(6)]
    for task in tasks[:3]:
        services.soft_delete(task.pk, user=user, channel=Channel.API, reason="cleanup")
    with pytest.raises(DeletionsSuspended, match="deletion spike: 4 deletions within a minute"):
        services.soft_delete(tasks[3].pk, user=user, channel=Channel.API, reason="cleanup")
    assert "DELETION SPIKE" in caplog.text
    assert DeletionBreaker.objects.get().is_tripped
    assert Task.objects.get(pk=tasks[3].pk).deleted_at is None
    with pytest.raises(DeletionsSuspended):
        services.soft_delete(tasks[4].pk, user=user, channel=Channel.API, reason="cleanup")
    finished(make_task, title="old")
    with pytest.raises(DeletionsSuspended):
        purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    assert run("acknowledge_deletions")[0] == 1
    code, out = run("acknowledge_deletions", "--actor", "ops:carol")
    assert code == 0 and "deletions allowed again" in out
    services.soft_delete(tasks[4].pk, user=user, channel=Channel.API, reason="after the acknowledgement")
    assert Task.objects.deleted().count() == 4
    assert acknowledge("ops:carol") is False


def test_the_admin_shows_the_breaker_and_acknowledges_it(admin_client, make_task, user, settings):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    task = make_task()
    with pytest.raises(DeletionsSuspended):
        services.soft_delete(task.pk, user=user, channel=Channel.API, reason="x")
    page = admin_client.get("/admin/retention/deletionbreaker/")
    assert page.status_code == 200 and "deletion spike" in page.content.decode()
    assert 'id="crux-acknowledge"' in page.content.decode()
    response = admin_client.post("/admin/retention/deletionbreaker/acknowledge/", follow=True)
    assert "acknowledged" in response.content.decode()
    assert not DeletionBreaker.objects.get().is_tripped


def test_locate_names_the_cause_for_each_fate(make_task, user):
    import uuid

    never = locate(uuid.uuid4())
    assert never.verdict.startswith("never existed") and not never.found
    live = make_task(title="live one")
    assert locate(live.pk).verdict.startswith("live: pending, last changed")
    cancelled = make_task(title="cancel me")
    services.cancel(cancelled.pk, actor=user, channel=Channel.API, reason="wrong repo")
    assert locate(cancelled.pk).verdict.endswith("by alice via api: wrong repo")
    trashed = make_task(title="trash me")
    services.soft_delete(trashed.pk, user=user, channel=Channel.API, reason="duplicate")
    verdict = locate(trashed.pk).verdict
    assert verdict.startswith("soft-deleted on") and "by alice (duplicate); restorable" in verdict
    old = finished(make_task, title="purge me")
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    trace = locate(old.pk)
    assert trace.verdict.startswith("purged on") and "by policy completed-7d (ops:test)" in trace.verdict
    assert trace.verdict.endswith("restorable") and trace.ledger[0]["archive_intact"]
    Path(trace.ledger[0]["archive_file"]).write_bytes(b"corrupted")
    assert locate(old.pk).verdict.endswith("NOT restorable: archive missing or corrupt")
    code, out = run("locate", str(old.pk))
    assert code == 0 and "purged on" in out.splitlines()[0] and "ledger" in out
    assert run("locate", str(uuid.uuid4()))[0] == 1
    assert run("locate", "not-an-id")[0] == 2


def test_beat_schedules_the_daily_backup_and_the_auto_purge_only_when_enabled(make_task, settings):
    from crux.celery import app
    from retention.tasks import auto_purge

    assert app.conf.beat_schedule["daily-backup"]["task"] == "crux.backup"
    assert settings.ENABLE_AUTO_PURGE is False and "auto-purge" not in app.conf.beat_schedule
    old = finished(make_task)
    assert auto_purge() == {"purged": 1, "archive": PurgeLedger.objects.get(task_id=old.pk).archive_file}
    assert PurgeLedger.objects.get(task_id=old.pk).channel == "retention"


def test_the_admin_purge_page_is_for_superusers_and_needs_confirmation(client, admin_client, staff, make_task):
    staff.user_permissions.add(*Permission.objects.all())  # every permission, still not a superuser
    old = finished(make_task, title="old enough")
    client.force_login(staff)
    assert client.get("/admin/retention/retentionpolicy/purge/").status_code == 403
    assert client.post("/admin/retention/retentionpolicy/purge/", {"confirm": "on"}).status_code == 403
    page = admin_client.get("/admin/retention/retentionpolicy/purge/")
    assert page.status_code == 200 and "old enough" in page.content.decode() and "completed-7d" in page.content.decode()
    assert "Purge by policy" in admin_client.get("/admin/retention/retentionpolicy/").content.decode()
    unconfirmed = admin_client.post("/admin/retention/retentionpolicy/purge/", {})
    assert unconfirmed.status_code == 200 and "This field is required" in unconfirmed.content.decode()
    assert Task.objects.filter(pk=old.pk).exists()
    done = admin_client.post("/admin/retention/retentionpolicy/purge/", {"confirm": "on"})
    assert done.status_code == 302 and done["Location"] == "/admin/retention/purgeledger/"
    entry = PurgeLedger.objects.get(task_id=old.pk)
    assert (entry.actor, entry.channel) == ("admin", "admin")
    assert not Task.objects.filter(pk=old.pk).exists()


def test_a_spike_posts_the_webhook(make_task, user, settings, webhook, django_capture_on_commit_callbacks):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    task = make_task()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DeletionsSuspended):
        services.soft_delete(task.pk, user=user, channel=Channel.API, reason="x")
    assert webhook and webhook[0]["event"] == "deletion_spike" and "deletion spike" in webhook[0]["text"]


def test_reconcile_drops_a_purged_tasks_entry_and_keeps_a_vanished_ones_as_evidence(make_task, caplog):
    """An orphan entry is dropped only when a signed tombstone says a purge removed its task."""
    from persistence import mirror
    from persistence.services import reconcile_mirror

    old = finished(make_task, title="to purge")
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 1
    vanished = uuid.uuid4()  # gone from SQL, and no tombstone says a purge took it
    conn = mirror.client()
    for task_id in (old.pk, vanished):
        conn.set(mirror.task_key(task_id), json.dumps({"id": str(task_id), "state": "completed", "version": 1}))
    with caplog.at_level("ERROR", logger="persistence.services"):
        report = reconcile_mirror()
    assert (report.orphan, report.vanished) == (1, 1)
    assert conn.get(mirror.task_key(old.pk)) is None
    assert conn.get(mirror.task_key(vanished)) is not None
    assert str(vanished) in caplog.text and "without a purge tombstone" in caplog.text
