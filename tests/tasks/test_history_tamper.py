"""History is append-only in the database itself, keyed by an audit key outside it, and verify_audit catches
raw-SQL tampering: an edited row, a removed row, a chain recomputed without the key, a forged purge grant."""

import hashlib
import hmac
import importlib
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from tasks import db_triggers, keys, services
from tasks.audit import GENESIS_HASH, HASHED_FIELDS, Channel, legacy_row_hash, row_hash
from tasks.exceptions import TaskError
from tasks.models import HistoryPurgeGrant, Task, TaskHistory
from tasks.selectors import verify_audit_chains

pytestmark = pytest.mark.django_db
KEY_A, KEY_B = "key-a:" + "a" * 40, "key-b:" + "b" * 40


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


def tamper(sql, params):
    """What someone with raw database access does: drop the triggers, change rows, put the triggers back."""
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    db_triggers.install(connection)


def pk_param(task):
    """The task's id as its column holds it, for raw SQL (on SQLite its 16 bytes)."""
    return Task._meta.pk.get_db_prep_value(task.pk, connection)


def rows_of(task):
    return list(TaskHistory.objects.filter(task=task).order_by("seq").values("id", *HASHED_FIELDS, "hash"))


def rewrite_chain(task, link, key_id, **changes):
    """Recompute the whole chain of ``task`` with ``link(prev, row)``, each row claiming ``key_id``, after applying
    ``changes`` to row 2."""
    prev = GENESIS_HASH
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        for row in rows_of(task):
            row["key_id"] = key_id
            if row["seq"] == 2:
                row.update(changes)
            row["hash"] = link(prev, row)
            cursor.execute(
                "UPDATE tasks_taskhistory SET reason = %s, key_id = %s, hash = %s WHERE id = %s",
                [row["reason"], row["key_id"], bytes.fromhex(row["hash"]), row["id"]],
            )
            prev = row["hash"]
        cursor.execute("UPDATE tasks_task SET history_head = %s WHERE id = %s", [bytes.fromhex(prev), pk_param(task)])
    db_triggers.install(connection)


def test_rows_are_signed_with_the_newest_audit_key(task):
    rows = rows_of(task)
    assert {row["key_id"] for row in rows} == {keys.current_key_id()}
    unkeyed = legacy_row_hash(GENESIS_HASH, rows[0])
    assert rows[0]["hash"] == row_hash(GENESIS_HASH, rows[0]) != unkeyed


def test_database_refuses_update_of_history(task):
    row = task.history.get(seq=2)
    with pytest.raises(DatabaseError, match="append-only"):
        raw("UPDATE tasks_taskhistory SET reason = 'rewritten' WHERE id = %s", [row.pk])
    assert TaskHistory.objects.get(pk=row.pk).reason == "queued"


def test_database_refuses_delete_of_history(task):
    with pytest.raises(DatabaseError, match="append-only"):
        raw("DELETE FROM tasks_taskhistory WHERE task_id = %s", [pk_param(task)])
    assert task.history.count() == 4


@pytest.mark.parametrize("mac", ["", "0" * 64, "forged"])
def test_a_grant_inserted_by_hand_does_not_open_the_delete_trigger(task, mac):
    raw(
        "INSERT INTO tasks_historypurgegrant (task_id, created_at, nonce, mac) VALUES (%s, %s, 'n0nce', %s)",
        [pk_param(task), task.created_at, mac],
    )
    with pytest.raises(DatabaseError, match="append-only"):
        raw("DELETE FROM tasks_taskhistory WHERE task_id = %s", [pk_param(task)])
    assert task.history.count() == 4
    code, out = verify()
    assert code == 1 and f"purge grant for task {task.pk}: forged: its MAC is invalid" in out


def test_a_grant_copied_to_another_task_does_not_open_the_trigger(task, make_task):
    """A valid MAC is bound to its task: copying one onto another task's grant is refused."""
    bystander = make_task(title="bystander")
    nonce = "n0nce"
    raw(
        "INSERT INTO tasks_historypurgegrant (task_id, created_at, nonce, mac) VALUES (%s, %s, %s, %s)",
        [pk_param(bystander), task.created_at, nonce, keys.grant_mac(task.pk, nonce)],
    )
    with pytest.raises(DatabaseError, match="append-only"):
        raw("DELETE FROM tasks_taskhistory WHERE task_id = %s", [pk_param(bystander)])
    assert bystander.history.count() == 1


def test_the_purge_still_erases_whole_tasks_and_leaves_no_grant(task, make_task):
    bystander = make_task(title="other task")
    assert services.erase_tasks([task.pk]) == 1
    assert not TaskHistory.objects.filter(task_id=task.pk).exists()
    assert not HistoryPurgeGrant.objects.exists()
    assert bystander.history.count() == 1
    with pytest.raises(DatabaseError, match="append-only"):
        raw("DELETE FROM tasks_taskhistory WHERE task_id = %s", [pk_param(bystander)])


def test_verify_audit_passes_on_intact_chains(task):
    code, out = verify()
    assert code == 0, out
    assert "all 1 task chains intact" in out


def test_verify_audit_detects_an_edited_row(task):
    tamper("UPDATE tasks_taskhistory SET reason = 'nothing to see' WHERE task_id = %s AND seq = 2", [pk_param(task)])
    code, out = verify()
    assert code == 1
    assert f"task {task.pk} seq 2: row edited, or the row before it removed, inserted or edited, or the chain" in out
    assert "1 problem(s) in 1 subject(s)" in out


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
    # Row 3 is chained to the removed row's hash, not to row 1's: its HMAC no longer matches.
    assert f"task {task.pk} seq 3: row edited, or the row before it removed" in out


def test_verify_audit_detects_a_removed_last_row(task):
    tamper("DELETE FROM tasks_taskhistory WHERE task_id = %s AND seq = 4", [pk_param(task)])
    code, out = verify()
    assert code == 1 and "chain head mismatch" in out


def test_a_chain_recomputed_with_the_unkeyed_hash_is_named(task):
    """The attack of the issue: edit a row, recompute the chain with the project's own sha256, fix the head."""
    rewrite_chain(task, legacy_row_hash, "", reason="nothing to see")
    problems = [str(p) for p in verify_audit_chains()]
    assert len(problems) == 4
    assert all("not signed with an audit key" in p for p in problems), problems


def test_a_chain_recomputed_with_a_guessed_key_is_named(task):
    """Claiming the real key id does not help without the real key."""
    key_id = keys.current_key_id()

    def guessed(prev, row):
        content = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
        return hmac.new(b"guess", f"{prev}\n{content}".encode(), "sha256").hexdigest()

    rewrite_chain(task, guessed, key_id, reason="nothing to see")
    code, out = verify()
    assert code == 1 and out.count("HMAC does not match") == 4


def test_verify_audit_detects_an_inserted_row_even_with_a_valid_link(task):
    """Even a row signed with the real key (an insider) is caught when the task's head does not follow it."""
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
        "key_id": last.key_id,
    }
    tamper(
        "INSERT INTO tasks_taskhistory (task_id, seq, event, state_from, state_to, actor, channel, reason, "
        "error_message, details, created_at, key_id, hash) VALUES (%s, 5, 'transition', 'completed', "
        "'completed', 'nobody', 'system', 'forged', '', '{}', %s, %s, %s)",
        [pk_param(task), last.created_at, last.key_id, bytes.fromhex(row_hash(last.hash, forged))],
    )
    code, out = verify()
    assert code == 1 and "chain head mismatch" in out


def test_verify_audit_detects_a_state_changed_behind_the_audit_trail(task):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_task SET state = 'running' WHERE id = %s", [pk_param(task)])
    code, out = verify()
    assert code == 1 and "task is running but its history ends in completed" in out


def test_verify_audit_names_a_missing_trigger(task):
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER tasks_taskhistory_no_delete"
            + (" ON tasks_taskhistory" if connection.vendor == "postgresql" else "")
        )
    code, out = verify()
    assert code == 1 and "append-only trigger tasks_taskhistory_no_delete is missing" in out


def test_verify_audit_rejects_bad_usage(db):
    with pytest.raises(SystemExit) as exc:
        call_command("verify_audit", "--batch-size", "0", stdout=StringIO(), stderr=StringIO())
    assert exc.value.code == 2


def test_rotation_new_rows_use_the_new_key_and_old_rows_still_verify(task, settings):
    settings.AUDIT_KEYS = [KEY_B, *settings.AUDIT_KEYS]
    old_key = task.history.get(seq=1).key_id
    services.update_task(task.pk, actor="system:test", channel=Channel.API, reason="rename", title="renamed")
    assert task.history.get(seq=5).key_id == "key-b" and task.history.get(seq=1).key_id == old_key
    assert list(verify_audit_chains()) == []
    settings.AUDIT_KEYS = [KEY_B]  # the old key retired while its rows are still here
    problems = [str(p) for p in verify_audit_chains()]
    assert len(problems) == 4 and all(f"unknown audit key {old_key!r}" in p for p in problems)


def test_rotation_the_purge_works_once_migrate_has_installed_the_new_key(task, settings):
    settings.AUDIT_KEYS = [KEY_A, *settings.AUDIT_KEYS]
    if connection.vendor == "postgresql":
        # The trigger accepts the grant keys it was installed with: before `migrate`, the new key is refused.
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            services.erase_tasks([task.pk])
    call_command("migrate", verbosity=0)
    assert services.erase_tasks([task.pk]) == 1


def _resign():
    return importlib.import_module("tasks.migrations.0007_keyed_history_chain").resign_chains


def test_the_keying_migration_resigns_intact_legacy_chains_only(task, make_task):
    """Rows of the unkeyed era: an intact chain is re-signed; a chain already tampered with stays unkeyed."""
    tampered = make_task(title="tampered before the upgrade")
    services.transition(tampered.pk, "queued", actor="system:test", channel=Channel.API, reason="go")
    for victim in (task, tampered):
        rewrite_chain(victim, legacy_row_hash, "")
    tamper("UPDATE tasks_taskhistory SET reason = 'forged' WHERE task_id = %s AND seq = 2", [pk_param(tampered)])
    db_triggers.uninstall(connection)
    _resign()(apps, connection.schema_editor())
    db_triggers.install(connection)
    problems = [str(p) for p in verify_audit_chains()]
    assert problems and all(str(tampered.pk) in p and "not signed with an audit key" in p for p in problems)
    assert {row["key_id"] for row in rows_of(task)} == {keys.current_key_id()}


@pytest.mark.parametrize("tampered", [False, True])
def test_an_archive_of_the_unkeyed_era_is_re_signed_only_if_it_verifies(task, settings, tmp_path, tampered):
    """A task purged before the upgrade: its signed tombstone vouches for the archived chain's head."""
    from retention.services import purge, unarchive_task

    settings.BACKUP_DIR = tmp_path
    rewrite_chain(task, legacy_row_hash, "")
    if tampered:
        tamper("UPDATE tasks_taskhistory SET reason = 'forged' WHERE task_id = %s AND seq = 2", [pk_param(task)])
    long_ago = timezone.now() - timedelta(days=30)
    with connection.cursor() as cursor:  # finished long ago, so the retention policy lets it go
        cursor.execute(
            "UPDATE tasks_task SET completed_at = %s WHERE id = %s",
            [Task._meta.get_field("completed_at").get_db_prep_value(long_ago, connection), pk_param(task)],
        )
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 1
    if tampered:
        with pytest.raises(TaskError, match="does not verify"):
            unarchive_task(task.pk, actor="ops:test", channel=Channel.COMMAND)
        assert not TaskHistory.objects.filter(task_id=task.pk).exists()
        return
    unarchive_task(task.pk, actor="ops:test", channel=Channel.COMMAND)
    assert list(verify_audit_chains()) == []
    assert {row["key_id"] for row in rows_of(task)} == {keys.current_key_id()} and len(rows_of(task)) == 5


def _committed_task(make_task):
    task = make_task(title="committed")
    services.transition(task.pk, "queued", actor="system:test", channel=Channel.API, reason="go")
    return task


@pytest.mark.django_db(transaction=True)
def test_a_raw_client_cannot_delete_history_with_an_inserted_grant(live_db, make_task):
    """Another client than Crux (sqlite3 module, psycopg): a hand-made grant, even with a key of its own, is refused."""
    task = _committed_task(make_task)
    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        client = sqlite3.connect(conf["NAME"])
        errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
        task_id, mark = task.pk.bytes, "?"
    else:
        client = psycopg.connect(
            host=conf["HOST"] or "127.0.0.1", port=conf["PORT"] or 5432, user=conf["USER"], dbname=conf["NAME"]
        )
        errors, task_id, mark = (psycopg.DatabaseError,), str(task.pk), "%s"
    try:
        attempts = [("n0nce", "0" * 64, None)]
        if connection.vendor == "postgresql":
            # A key of the attacker's own, handed to the session as the purge does, with a MAC that matches it.
            own = "attacker-key"
            mac = hmac.new(own.encode(), f"{task.pk.hex}:n0nce".encode(), "sha256").hexdigest()
            attempts.append(("n0nce", mac, own))
        for nonce, mac, own_key in attempts:
            cursor = client.cursor()
            if own_key:
                cursor.execute("SELECT set_config('crux.purge_grant_key', %s, true)", [own_key])
            cursor.execute(
                f"INSERT INTO tasks_historypurgegrant (task_id, created_at, nonce, mac) "
                f"VALUES ({mark}, '2026-01-01 00:00:00', {mark}, {mark})",
                [task_id, nonce, mac],
            )
            with pytest.raises(errors):
                cursor.execute(f"DELETE FROM tasks_taskhistory WHERE task_id = {mark}", [task_id])
            client.rollback()
    finally:
        client.close()
    assert task.history.count() == 2
    assert services.erase_tasks([task.pk]) == 1 and not TaskHistory.objects.filter(task_id=task.pk).exists()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DEBUG": "false"}, "ImproperlyConfigured: no audit key: set AUDIT_KEYS or write AUDIT_KEY_FILE"),
        ({"DEBUG": "true"}, "['debug']"),
        ({"DEBUG": "false", "AUDIT_KEYS": "k2:second,k1:first"}, "['k2', 'k1']"),
        ({"DEBUG": "false", "AUDIT_KEYS": "bare-secret"}, "['k"),
    ],
)
def test_settings_never_invent_an_audit_key_outside_debug(env, expected, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("AUDIT_KEYS", "DEBUG")},
        "AUDIT_KEY_FILE": str(tmp_path / "missing"),
        "SECRET_KEY": "x" * 50,
        **env,
    }
    code = "import django; django.setup(); from tasks import keys; print(keys.key_ids())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert expected in done.stdout + done.stderr
    if env["DEBUG"] == "false" and "AUDIT_KEYS" not in env:
        assert done.returncode != 0 and "`make keys`" in done.stderr
