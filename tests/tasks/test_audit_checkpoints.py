"""Signed checkpoints outside the database tie every chain together: verify_audit names a task removed whole,
a chain cut or rewritten since, a forged or removed tombstone and a forged checkpoint."""

import gzip
import os
import time
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_results.models import TaskResult

from persistence.backup import backup
from retention.models import PurgeLedger
from retention.services import purge
from tasks import checkpoints, db_triggers, services
from tasks.audit import Channel, audited
from tasks.dispatch import EXECUTE_TASK
from tasks.models import Task, TaskOutput
from tasks.selectors import verify_audit_chains
from tests.tasks.test_history_tamper import pk_param, tamper

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100


@pytest.fixture
def done(make_task):
    """``done(title, days_ago=0)``: a completed task with an output, finished ``days_ago`` days ago."""

    def make(title, days_ago=0):
        task = make_task(title=title)
        for state in ("queued", "running", "completed"):
            services.transition(task.pk, state, actor="system:test", channel=Channel.WORKER, reason=state)
        TaskOutput.objects.create(task=task, output_type="stdout", content=f"output of {title}")
        if days_ago:
            task = Task.objects.get(pk=task.pk)
            task.completed_at = timezone.now() - timedelta(days=days_ago)
            with audited("system:test", channel=Channel.SYSTEM, reason="age the task for the test"):
                task.save()
        return Task.objects.get(pk=task.pk)

    return make


def problems():
    return [str(p) for p in verify_audit_chains()]


def ledger_param(task):
    """The task's id as a tombstone's column holds it, for raw SQL (32 hex digits on SQLite, not the task's bytes)."""
    return PurgeLedger._meta.get_field("task_id").get_db_prep_value(task.pk, connection)


def remove_whole(task):
    """The unreported deletion of the issue: task, history and outputs removed with raw SQL."""
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        for table in ("tasks_taskoutput", "tasks_taskhistory"):
            cursor.execute(f"DELETE FROM {table} WHERE task_id = %s", [pk_param(task)])
        cursor.execute("DELETE FROM tasks_task WHERE id = %s", [pk_param(task)])
    db_triggers.install(connection)


def cut_last_row(task):
    """Remove the chain's last row and move the task's head (and state) back: the chain alone still verifies."""
    last, before = task.history.get(seq=task.history_count), task.history.get(seq=task.history_count - 1)
    tamper("DELETE FROM tasks_taskhistory WHERE id = %s", [last.pk])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tasks_task SET history_count = %s, history_head = %s, state = %s WHERE id = %s",
            [before.seq, bytes.fromhex(before.hash), before.state_to, pk_param(task)],
        )


def test_a_checkpoint_lists_every_chain_head_and_the_ledger_head_signed(done, settings):
    tasks = [done(f"task {i}") for i in range(3)]
    written = checkpoints.write_checkpoint()
    assert written.path.parent == Path(settings.AUDIT_CHECKPOINT_DIR) and written.tasks == 3
    opened = checkpoints.open_checkpoint(written.path)
    assert opened.ledger == {"count": 0, "last_id": None, "head": "0" * 64}
    expected = sorted((t.pk, t.history_count, t.history_head) for t in tasks)
    assert [(e.task_id, e.seq, e.head) for e in opened.entries()] == expected
    assert problems() == []


def test_a_task_removed_whole_is_named_as_vanished(done):
    victim, bystander = done("victim"), done("bystander")
    checkpoints.write_checkpoint()
    remove_whole(victim)
    found = problems()
    assert len(found) == 1 and found[0].startswith(f"task {victim.pk}: vanished: in checkpoint checkpoint-")
    assert "4 history rows" in found[0] and str(bystander.pk) not in found[0]
    out = StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("verify_audit", "--no-progress", stdout=out, stderr=StringIO())
    assert exc.value.code == 1 and "vanished" in out.getvalue()
    out = StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert "(2 tasks); 1 vanished task(s) carried forward" in out.getvalue()  # the bystander, and the victim


def test_a_purged_task_is_accounted_for_by_its_signed_tombstone(done):
    old = done("old", days_ago=30)
    checkpoints.write_checkpoint()
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 1
    assert problems() == []
    tombstone = PurgeLedger.objects.get(task_id=old.pk)
    assert tombstone.signature_valid() and tombstone.prev_mac == "0" * 64


def test_a_forged_tombstone_does_not_account_for_a_vanished_task(done):
    victim = done("victim")
    checkpoints.write_checkpoint()
    remove_whole(victim)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO retention_purgeledger (task_id, title, state, owner_username, task_created_at, purged_at, "
            "policy, actor, channel, archive_file, archive_checksum, history_count, history_head, restored_by, "
            "key_id, prev_mac, mac) VALUES (%s, 'victim', 'completed', '', %s, %s, 'completed-7d', 'ops', "
            "'command', '/nowhere', 'sha256:0', 99, 'x', '', %s, %s, %s)",
            [ledger_param(victim), victim.created_at, timezone.now(), "forger", "0" * 64, "f" * 64],
        )
    found = problems()
    assert any("signature invalid: forged or edited" in p and p.startswith("purge ledger") for p in found)
    assert any(p.startswith(f"task {victim.pk}: vanished") for p in found)


def test_a_tombstone_edited_or_removed_is_named(done):
    first, second = done("first", days_ago=30), done("second", days_ago=30)
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 2
    checkpoints.write_checkpoint()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE retention_purgeledger SET actor = 'nobody' WHERE task_id = %s", [ledger_param(first)])
    edited = problems()
    tombstone = PurgeLedger.objects.get(task_id=first.pk)
    vanished = "vanished: the Redis mirror saw it, but SQL has neither it nor a valid tombstone"
    assert edited == [
        f"purge ledger: tombstone #{tombstone.pk} (task {first.pk}): signature invalid: forged or edited",
        f"task {first.pk}: {vanished}",  # an edited tombstone accounts for nothing
    ]
    last = PurgeLedger.objects.order_by("-pk").first()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM retention_purgeledger WHERE id = %s", [last.pk])
    cut = problems()
    assert f"purge ledger: tombstone #{last.pk}, the last one checkpointed, is missing: the ledger was cut" in cut
    assert f"task {last.task_id}: {vanished}" in cut and last.task_id in {first.pk, second.pk}


def test_a_task_removed_whole_before_any_checkpoint_is_named_by_the_stores_that_saw_it(done, settings):
    """No checkpoint yet: the Redis mirror (and Celery's results) still witness that the task was committed."""
    victim = done("victim")
    remove_whole(victim)
    assert problems() == [
        f"task {victim.pk}: vanished: the Redis mirror saw it, but SQL has neither it nor a valid tombstone"
    ]
    settings.REDIS_KEY_PREFIX = "crux-test-elsewhere"  # a mirror that never saw it: nothing to witness
    assert problems() == []
    TaskResult.objects.create(task_id=str(victim.pk), task_name=EXECUTE_TASK, status="SUCCESS")
    TaskResult.objects.create(task_id=str(uuid.uuid4()), task_name="crux.recovery_sweep", status="SUCCESS")
    assert problems() == [
        f"task {victim.pk}: vanished: Celery's results saw it, but SQL has neither it nor a valid tombstone"
    ]


def test_a_chain_cut_at_its_end_is_named_by_the_checkpoint(done):
    task = done("cut me")
    assert problems() == []
    checkpoints.write_checkpoint()
    cut_last_row(task)
    found = problems()
    assert found == [
        f"task {task.pk} seq 4: row missing: checkpoint {checkpoints.newest()[0].name} recorded the "
        "chain up to seq 4, it is gone"
    ]


def test_a_chain_rewritten_since_the_checkpoint_is_named(done):
    task = done("rewrite me")
    checkpoints.write_checkpoint()
    cut_last_row(task)
    services.transition(task.pk, "completed", actor="system:test", channel=Channel.WORKER, reason="again")
    found = problems()
    assert len(found) == 1 and "seq 4: chain rewritten: its hash differs" in found[0]


def test_a_vanished_task_is_carried_into_the_next_checkpoint(done):
    victim = done("victim")
    first = checkpoints.write_checkpoint()
    remove_whole(victim)
    second = checkpoints.write_checkpoint()
    assert second.carried == [str(victim.pk)] and second.tasks == 1
    first.path.unlink()
    assert problems() == [
        f"task {victim.pk}: vanished: in checkpoint {second.name} (created "
        f"{second.created_at:%Y-%m-%d %H:%M:%S}Z, 4 history rows) but not in the database, and no valid "
        "tombstone accounts for it"
    ]


def test_a_forged_checkpoint_is_named_and_the_last_valid_one_used(done):
    victim = done("victim")
    good = checkpoints.write_checkpoint()
    forged = checkpoints.write_checkpoint()
    with gzip.open(forged.path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'",4,"', b'",9,"')
    with gzip.open(forged.path, "wb") as f:
        f.writelines(lines)
    remove_whole(victim)
    found = problems()
    assert any(p.startswith("checkpoint: ") and "signature invalid" in p for p in found)
    assert any(p.startswith(f"task {victim.pk}: vanished: in checkpoint {good.name}") for p in found)


def test_a_checkpoint_signed_with_an_unknown_key_is_refused(done, settings):
    done("task")
    settings.AUDIT_KEYS = ["temporary:" + "t" * 40, *settings.AUDIT_KEYS]
    written = checkpoints.write_checkpoint()
    settings.AUDIT_KEYS = settings.AUDIT_KEYS[1:]
    with pytest.raises(checkpoints.CheckpointError, match="unknown key"):
        checkpoints.open_checkpoint(written.path)


def test_each_backup_writes_a_checkpoint_naming_it(done):
    done("backed up")
    result = backup("json")
    opened = checkpoints.open_checkpoint(result.checkpoint)
    assert opened.backup == str(result.path) and opened.tasks == 1


def test_beat_writes_checkpoints_on_the_housekeeping_queue(done, settings):
    from crux.celery import app, route_task
    from tasks.tasks import audit_checkpoint

    entry = app.conf.beat_schedule["audit-checkpoint"]
    assert entry["task"] == "crux.audit_checkpoint" and entry["schedule"] == settings.AUDIT_CHECKPOINT_SECONDS
    assert route_task("crux.audit_checkpoint", (), {}, {}) == {"queue": settings.CELERY_HOUSEKEEPING_QUEUE}
    done("task")
    path = Path(audit_checkpoint())
    assert path.exists() and checkpoints.open_checkpoint(path).tasks == 1


def test_old_checkpoints_rotate_but_never_the_newest(done, settings):
    settings.BACKUP_RETENTION_DAYS = 1
    written = [checkpoints.write_checkpoint().path for _ in range(3)]
    stamp = time.time() - 3 * 86400
    for path in written:
        os.utime(path, (stamp, stamp))
    assert checkpoints.rotate() == written[:2] and written[2].exists()
