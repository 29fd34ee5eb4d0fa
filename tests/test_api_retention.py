"""The trace and purge endpoints: locate over HTTP, and the staff-only purge (dry run unless confirmed)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from retention.models import PurgeLedger
from tasks.audit import Channel, audited
from tasks.models import Task
from tests.api_support import client_for

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100


def old_completed(task_in, user) -> Task:
    task = task_in("completed")
    task.completed_at = timezone.now() - timedelta(days=30)
    with audited("system:test", channel=Channel.SYSTEM, reason="age for the test"):
        task.save()
    return task


def test_trace_answers_the_owner_and_staff_and_hides_from_others(task_in, user, other_user, staff):
    task = task_in("running")
    body = client_for(user).get(f"/api/tasks/{task.pk}/trace").json()
    assert body["verdict"].startswith("live: running") and body["exists"] is True
    assert body["last_history"][0]["state_to"] == "running" and body["task"]["state"] == "running"
    assert client_for(other_user).get(f"/api/tasks/{task.pk}/trace").status_code == 404
    assert client_for(staff).get(f"/api/tasks/{task.pk}/trace").status_code == 200


def test_trace_of_a_purged_task_reaches_its_owner_through_the_ledger(task_in, user, other_user, staff):
    task = old_completed(task_in, user)
    assert client_for(staff).post("/api/purge?confirm=true").json()["purged"] == 1
    body = client_for(user).get(f"/api/tasks/{task.pk}/trace").json()
    assert body["exists"] is False and body["verdict"].startswith("purged on")
    assert body["ledger"][0]["restorable"] is True and body["ledger"][0]["actor"] == "staffer"
    assert client_for(other_user).get(f"/api/tasks/{task.pk}/trace").status_code == 404


def test_trace_of_an_unknown_or_malformed_id(staff):
    assert client_for(staff).get(f"/api/tasks/{uuid.uuid4()}/trace").status_code == 404
    response = client_for(staff).get("/api/tasks/not-a-uuid/trace")
    assert response.status_code == 400 and "task_id" in response.json()


def test_purge_is_a_dry_run_unless_confirmed(task_in, user, staff):
    task = old_completed(task_in, user)
    dry = client_for(staff).post("/api/purge")
    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True and [i["id"] for i in dry.json()["selected"]] == [str(task.pk)]
    assert Task.objects.filter(pk=task.pk).exists() and not PurgeLedger.objects.exists()
    assert client_for(staff).post("/api/purge?confirm=false").json()["purged"] == 0
    done = client_for(staff).post("/api/purge?confirm=true").json()
    assert done["dry_run"] is False and done["purged"] == 1 and done["archive_checksum"].startswith("sha256:")
    entry = PurgeLedger.objects.get(task_id=task.pk)
    assert (entry.actor, entry.channel, entry.policy) == ("staffer", "api", "completed-7d")


def test_purge_refuses_bad_limits_a_tripped_breaker_and_an_unwritable_archive(task_in, user, staff, settings, tmp_path):
    task = old_completed(task_in, user)
    for bad in ("0", "-1", "x", str(settings.MAX_TASKS_PER_PURGE + 1)):
        response = client_for(staff).post(f"/api/purge?confirm=true&limit={bad}")
        assert response.status_code == 400 and "limit" in response.json(), bad
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings.BACKUP_DIR = blocker / "backups"
    response = client_for(staff).post("/api/purge?confirm=true")
    assert response.status_code == 503 and "nothing was deleted" in response.json()["detail"]
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    response = client_for(staff).post("/api/purge?confirm=true")
    assert response.status_code == 409 and "deletions are suspended" in str(response.json())
    assert Task.objects.filter(pk=task.pk).exists() and not PurgeLedger.objects.exists()
