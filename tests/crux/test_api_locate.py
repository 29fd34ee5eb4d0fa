"""GET /api/tasks/{id}/locate: what happened to a task, over HTTP, for its owner and staff only.

``/trace`` is the endpoint's former path, kept (deprecated) for existing clients: both answer alike.
"""

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from crux.locate import locate
from retention.models import PurgeLedger
from tasks import checkpoints, db_triggers, services
from tasks.audit import Channel
from tasks.models import Task
from tests.api_support import client_for, old_completed_task

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db
PATHS = ["locate", "trace"]


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100


@pytest.mark.parametrize("path", PATHS)
def test_locate_answers_the_owner_and_staff_and_hides_from_others(path, task_in, user, other_user, staff):
    task = task_in("running")
    body = client_for(user).get(f"/api/tasks/{task.pk}/{path}").json()
    assert body["verdict"].startswith("live: running") and body["exists"] is True
    assert body["last_history"][0]["state_to"] == "running" and body["task"]["state"] == "running"
    assert client_for(other_user).get(f"/api/tasks/{task.pk}/{path}").status_code == 404
    assert client_for(staff).get(f"/api/tasks/{task.pk}/{path}").status_code == 200


@pytest.mark.parametrize("path", PATHS)
def test_locate_of_a_purged_task_reaches_its_owner_through_the_ledger(path, task_in, user, other_user, staff):
    task = old_completed_task(task_in)
    assert client_for(staff).post("/api/purge?confirm=true").json()["purged"] == 1
    body = client_for(user).get(f"/api/tasks/{task.pk}/{path}").json()
    assert body["exists"] is False and body["verdict"].startswith("purged on")
    assert body["ledger"][0]["restorable"] is True and body["ledger"][0]["actor"] == "staffer"
    assert client_for(other_user).get(f"/api/tasks/{task.pk}/{path}").status_code == 404


@pytest.mark.parametrize("path", PATHS)
def test_locate_of_an_unknown_or_malformed_id(path, staff):
    assert client_for(staff).get(f"/api/tasks/{uuid.uuid4()}/{path}").status_code == 404
    response = client_for(staff).get(f"/api/tasks/not-a-uuid/{path}")
    assert response.status_code == 400 and "task_id" in response.json()


@pytest.mark.parametrize("path", PATHS)
def test_a_cancellation_is_named_by_its_own_row_not_by_a_later_restore_or_edit(path, task_in, user, staff):
    """Cancel -> soft delete -> restore -> edits: the verdict names who cancelled and why, not who restored."""
    task = task_in("queued")
    services.cancel(task.pk, actor=user, channel=Channel.API, reason="wrong repository")
    services.soft_delete(task.pk, user=staff, channel=Channel.ADMIN, reason="tidy up")
    services.restore(task.pk, user=staff, channel=Channel.ADMIN, reason="kept after all")
    for n in range(5):  # the cancellation is no longer among the last five rows
        services.update_task(task.pk, actor="system:test", channel=Channel.COMMAND, reason=f"edit {n}", title=f"t{n}")
    body = client_for(staff).get(f"/api/tasks/{task.pk}/{path}").json()
    assert body["verdict"].startswith("cancelled on ") and "by alice via api: wrong repository" in body["verdict"]
    assert "staffer" not in body["verdict"] and "kept after all" not in body["verdict"]
    assert body["last_history"][0]["reason"] == "edit 4"


def _remove_whole(task):
    """Task, history and outputs deleted with raw SQL, triggers dropped and put back: the attack of issue 13."""
    task_id = Task._meta.pk.get_db_prep_value(task.pk, connection)
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tasks_taskhistory WHERE task_id = %s", [task_id])
        cursor.execute("DELETE FROM tasks_task WHERE id = %s", [task_id])
    db_triggers.install(connection)


@pytest.mark.parametrize("path", PATHS)
def test_a_task_removed_behind_the_audit_trail_is_located_through_the_checkpoint(path, task_in, staff, user):
    task = task_in("completed")
    checkpoint = checkpoints.write_checkpoint()
    _remove_whole(task)
    body = client_for(staff).get(f"/api/tasks/{task.pk}/{path}").json()
    assert body["exists"] is False and body["checkpoint"]["history_count"] == 4
    assert body["verdict"].startswith(f"was stored: seen in checkpoint {checkpoint.name} at ")
    assert "with 4 history rows" in body["verdict"] and "possible tampering" in body["verdict"]
    assert "never" not in body["verdict"]
    assert client_for(user).get(f"/api/tasks/{task.pk}/{path}").status_code == 404  # the owner is unknown now


def test_the_mirror_alone_is_enough_to_say_a_task_was_stored(task_in, staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        task = task_in("queued")
    _remove_whole(task)
    location = locate(task.pk)
    assert location.checkpoint is None and location.mirror["present"] is True
    assert location.verdict.startswith("was stored: the Redis mirror holds it") and location.found


def test_a_forged_tombstone_is_not_taken_for_a_purge(task_in, staff):
    task = task_in("completed")
    checkpoints.write_checkpoint()
    _remove_whole(task)
    PurgeLedger.objects.create(
        task_id=task.pk,
        title=task.title,
        state="completed",
        task_created_at=task.created_at,
        policy="completed-7d",
        actor="ops",
        channel="command",
        archive_file="/nowhere",
        archive_checksum="sha256:0",
        history_count=4,
        history_head=task.history_head,
        mac="f" * 64,
    )
    location = locate(task.pk)
    assert location.ledger[0]["signature_valid"] is False and not location.verdict.startswith("purged")
    assert "names it but is not validly signed" in location.verdict and "seen in checkpoint" in location.verdict
    out = StringIO()
    call_command("locate", str(task.pk), stdout=out)
    assert "checkpoint:" in out.getvalue() and "possible tampering" in out.getvalue()
