"""History is append-only in the database itself, and verify_audit catches raw-SQL tampering."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from tasks import db_triggers, services
from tasks.audit import Channel, row_hash
from tasks.models import HistoryPurgeGrant, TaskHistory

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(make_task, user):
    task = make_task(title="audited", metadata={"big": 1e20, "small": 0.1, "text": "héllo ✓"})
    for state in ("queued", "running", "completed"):
        services.transition(task.pk, state, actor="system:test", channel=Channel.WORKER, reason=state, result={"n": 1})
    return task


def raw(sql, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def verify():
    out = StringIO()
    try:
        call_command("verify_audit", "--no-progress", stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_database_refuses_update_of_history(task):
    row = task.history.get(seq=2)
    with pytest.raises(DatabaseError, match="append-only"):
        raw("UPDATE tasks_taskhistory SET reason = 'rewritten' WHERE id = %s", [row.pk])
    assert TaskHistory.objects.get(pk=row.pk).reason == "queued"


def test_database_refuses_delete_of_history(task):
    with pytest.raises(DatabaseError, match="append-only"):
        raw("DELETE FROM tasks_taskhistory WHERE task_id = %s", [pk_param(task)])
    assert task.history.count() == 4


def test_purge_grant_is_the_only_way_past_the_delete_trigger(task, make_task):
    bystander = make_task(title="other task")
    with transaction.atomic():
        HistoryPurgeGrant.objects.create(task_id=task.pk)
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM tasks_taskhistory WHERE task_id = %s",
                [pk_param(task)],
            )
        HistoryPurgeGrant.objects.filter(task_id=task.pk).delete()
    assert task.history.count() == 0
    with pytest.raises(DatabaseError, match="append-only"):
        raw(
            "DELETE FROM tasks_taskhistory WHERE task_id = %s",
            [pk_param(bystander)],
        )
    assert bystander.history.count() == 1


def test_verify_audit_passes_on_intact_chains(task):
    code, out = verify()
    assert code == 0, out
    assert "all 1 task chains intact" in out


def tamper(sql, params):
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    db_triggers.install(connection)


def pk_param(task):
    return task.pk.hex if connection.vendor == "sqlite" else task.pk


def test_verify_audit_detects_an_edited_row(task):
    tamper("UPDATE tasks_taskhistory SET reason = 'nothing to see' WHERE task_id = %s AND seq = 2", [pk_param(task)])
    code, out = verify()
    assert code == 1
    assert f"task {task.pk} seq 2: row edited" in out
    assert "1 problem(s) in 1 of 1 task chains" in out


def test_verify_audit_detects_an_edited_details_json(task):
    tamper(
        "UPDATE tasks_taskhistory SET details = %s WHERE task_id = %s AND seq = 1",
        ['{"changes": {"title": "forged"}}', pk_param(task)],
    )
    code, out = verify()
    assert code == 1 and f"task {task.pk} seq 1: row edited" in out


def test_verify_audit_detects_a_removed_middle_row(task):
    tamper("DELETE FROM tasks_taskhistory WHERE task_id = %s AND seq = 2", [pk_param(task)])
    code, out = verify()
    assert code == 1
    assert f"task {task.pk} seq 3: rows 2..2 are missing" in out
    assert f"task {task.pk} seq 3: link broken" in out


def test_verify_audit_detects_a_removed_last_row(task):
    tamper("DELETE FROM tasks_taskhistory WHERE task_id = %s AND seq = 4", [pk_param(task)])
    code, out = verify()
    assert code == 1 and "chain head mismatch" in out


def test_verify_audit_detects_an_inserted_row_even_with_a_valid_hash(task):
    last = task.history.get(seq=4)
    forged = {
        "task_id": task.pk,
        "seq": 5,
        "event": "transition",
        "state_from": "completed",
        "state_to": "completed",
        "actor": "nobody",
        "actor_user_id": None,
        "channel": "system",
        "reason": "forged",
        "error_message": "",
        "details": {},
        "created_at": last.created_at,
    }
    forged_hash = row_hash(last.hash, forged)
    tamper(
        "INSERT INTO tasks_taskhistory (task_id, seq, event, state_from, state_to, actor, channel, reason, "
        "error_message, details, created_at, prev_hash, hash) VALUES (%s, 5, 'transition', 'completed', "
        "'completed', 'nobody', 'system', 'forged', '', '{}', %s, %s, %s)",
        [pk_param(task), last.created_at, last.hash, forged_hash],
    )
    code, out = verify()
    assert code == 1 and "chain head mismatch" in out


def test_verify_audit_detects_a_state_changed_behind_the_audit_trail(task):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_task SET state = 'running' WHERE id = %s", [pk_param(task)])
    code, out = verify()
    assert code == 1 and "task is running but its history ends in completed" in out


def test_verify_audit_rejects_bad_usage(db):
    with pytest.raises(SystemExit) as exc:
        call_command("verify_audit", "--batch-size", "0", stdout=StringIO(), stderr=StringIO())
    assert exc.value.code == 2
