"""POST /api/purge: staff only, a dry run unless confirmed, refused on a bad limit, a tripped breaker, no archive."""

from __future__ import annotations

import pytest

from retention.models import PurgeLedger
from tasks.models import Task
from tests.api_support import client_for, old_completed_task

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100


def test_purge_is_a_dry_run_unless_confirmed(task_in, user, staff):
    task = old_completed_task(task_in)
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
    task = old_completed_task(task_in)
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
