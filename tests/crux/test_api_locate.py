"""GET /api/tasks/{id}/locate: what happened to a task, over HTTP, for its owner and staff only.

``/trace`` is the endpoint's former path, kept (deprecated) for existing clients: both answer alike.
"""

import uuid

import pytest

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
