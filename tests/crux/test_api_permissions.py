"""The permission matrix: every endpoint x anonymous / owner / other user / staff / staff with permissions /
superuser, asserting the exact status code, and that a refused request changed nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tasks.models import Task
from tests.api_support import ROLES, TASK_PERMISSIONS, client_for, grant, snapshot
from tests.conftest import HEALTHY_PARTS_DEADLINE

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # {id} is replaced by the fixture task's id
    codes: tuple[int, ...]  # in the order of ROLES
    state: str | None = None  # a task owned by ``user`` in this state, or no task
    deleted: bool = False
    body: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("api root", "get", "/api/", (200, 200, 200, 200, 200, 200)),
    Case("schema", "get", "/api/schema/", (200, 200, 200, 200, 200, 200)),
    Case("swagger ui", "get", "/api/docs/", (200, 200, 200, 200, 200, 200)),
    Case("list", "get", "/api/tasks/", (401, 200, 200, 200, 200, 200), state="pending"),
    Case("persistent list", "get", "/api/tasks/persistent", (401, 200, 200, 200, 200, 200), state="pending"),
    Case("submit", "post", "/api/tasks/", (401, 201, 201, 201, 201, 201), body={"title": "t"}),
    Case("detail", "get", "/api/tasks/{id}", (401, 200, 404, 200, 200, 200), state="running"),
    Case("status", "get", "/api/tasks/{id}/status", (401, 200, 404, 200, 200, 200), state="running"),
    Case("history", "get", "/api/tasks/history/{id}", (401, 200, 404, 200, 200, 200), state="completed"),
    Case("outputs list", "get", "/api/tasks/outputs/{id}", (401, 200, 404, 200, 200, 200), state="running"),
    Case(
        "outputs add",
        "post",
        "/api/tasks/outputs/{id}",
        (401, 201, 404, 403, 201, 201),
        state="running",
        body={"output_type": "log", "content": "line"},
    ),
    Case("cancel", "post", "/api/tasks/{id}/cancel?confirm=true", (401, 200, 404, 403, 200, 200), state="queued"),
    Case("cancel unconfirmed", "post", "/api/tasks/{id}/cancel", (401, 400, 404, 403, 400, 400), state="queued"),
    Case(
        "delete",
        "delete",
        "/api/tasks/{id}?confirm=true",
        (401, 403, 403, 403, 200, 200),
        state="completed",
        body={"reason": "cleanup"},
    ),
    Case(
        "delete unconfirmed",
        "delete",
        "/api/tasks/{id}",
        (401, 403, 403, 403, 400, 400),
        state="completed",
        body={"reason": "x"},
    ),
    Case("restore", "post", "/api/tasks/{id}/restore", (401, 403, 403, 403, 200, 200), state="failed", deleted=True),
    Case("recover", "post", "/api/tasks/{id}/recover", (401, 403, 403, 403, 200, 200), state="failed"),
    Case("locate", "get", "/api/tasks/{id}/locate", (401, 200, 404, 200, 200, 200), state="cancelled"),
    Case("trace", "get", "/api/tasks/{id}/trace", (401, 200, 404, 200, 200, 200), state="cancelled"),
    Case("purge dry run", "post", "/api/purge", (401, 403, 403, 200, 200, 200), state="completed"),
    Case("purge confirmed", "post", "/api/purge?confirm=true", (401, 403, 403, 200, 200, 200), state="completed"),
    Case("stats", "get", "/api/persistence/stats", (401, 403, 403, 200, 200, 200)),
    Case("metrics", "get", "/metrics", (401, 403, 403, 200, 200, 200)),
    Case("legacy solve", "post", "/api/v1/solve", (401, 201, 201, 201, 201, 201), body={"request": {"q": 1}}),
    Case("legacy job", "get", "/api/v1/jobs/{id}", (401, 200, 404, 200, 200, 200), state="running"),
    Case(
        "legacy cancel",
        "delete",
        "/api/v1/jobs/{id}?confirm=true",
        (401, 200, 404, 403, 200, 200),
        state="running",
    ),
    Case("legacy cancel unconfirmed", "delete", "/api/v1/jobs/{id}", (401, 400, 404, 403, 400, 400), state="running"),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_permission_matrix(case: Case, role: str, users: dict[str, Any], task_in: Any) -> None:
    task = task_in(case.state, deleted=case.deleted) if case.state else None
    path = case.path.replace("{id}", str(task.pk)) if task else case.path
    before = snapshot(task) if task else None
    tasks_before = Task.objects.count()

    response = getattr(client_for(users[role]), case.method)(path, case.body or None, format="json")

    expected = case.codes[ROLES.index(role)]
    assert response.status_code == expected, (role, response.status_code, getattr(response, "data", None))
    if expected >= 400:
        assert Task.objects.count() == tasks_before
        if task:
            assert snapshot(task) == before, "a refused request changed the task"


def test_health_matrix(users: dict[str, Any], private_redis: Any, settings: Any) -> None:
    """Health is public (for probes), so every role gets the same status; only staff see details."""
    settings.CELERY_BROKER_URL = private_redis.url  # a broker of our own, with no worker listening
    settings.HEALTH_TIMEOUT = HEALTHY_PARTS_DEADLINE  # the worker, which nothing runs here, fails by it
    for role in ROLES:
        response = client_for(users[role]).get("/api/health/")
        assert (response.status_code, response.data["status"]) == (200, "degraded"), role
        assert response.data["failing"] == ["worker"]
        has_details = "detail" in response.data["checks"]["worker"]
        assert has_details == (role in ("staff", "staff_perm", "superuser")), role


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/tasks/{id}", None),
        ("get", "/api/tasks/{id}/status", None),
        ("get", "/api/tasks/history/{id}", None),
        ("get", "/api/tasks/outputs/{id}", None),
        ("post", "/api/tasks/outputs/{id}", {"output_type": "log", "content": "x"}),
        ("post", "/api/tasks/{id}/cancel?confirm=true", None),
        ("delete", "/api/tasks/{id}?confirm=true", {"reason": "x"}),
        ("post", "/api/tasks/{id}/recover", None),
        ("get", "/api/v1/jobs/{id}", None),
        ("delete", "/api/v1/jobs/{id}?confirm=true", None),
    ],
)
def test_other_user_with_every_permission_still_gets_404(
    method: str, path: str, body: Any, other_user: Any, task_in: Any
) -> None:
    """Permissions widen what one may do to visible tasks; they never make another user's task visible."""
    task = task_in("failed" if "recover" in path else "running")
    before = snapshot(task)
    client = client_for(grant(other_user, *TASK_PERMISSIONS))
    response = getattr(client, method)(path.replace("{id}", str(task.pk)), body, format="json")
    assert response.status_code == 404
    assert response.data == {"detail": "Not found."}
    assert snapshot(task) == before


def test_restore_of_another_users_task_is_404_even_with_permission(other_user: Any, task_in: Any) -> None:
    task = task_in("completed", deleted=True)
    response = client_for(grant(other_user, "restore_task")).post(f"/api/tasks/{task.pk}/restore")
    assert response.status_code == 404
    assert Task.objects.get(pk=task.pk).is_deleted


def test_owner_with_delete_permission_deletes_own_task(user: Any, task_in: Any) -> None:
    task = task_in("completed")
    client = client_for(grant(user, "soft_delete_task"))
    response = client.delete(f"/api/tasks/{task.pk}?confirm=true", {"reason": "mine"}, format="json")
    assert response.status_code == 200
    assert Task.objects.get(pk=task.pk).deleted_by == user


def test_an_invalid_token_is_401_even_on_public_endpoints(db: Any, settings: Any) -> None:
    """Readiness identifies the caller once the database and Redis answered (else it answers 503 to anyone)."""
    from rest_framework.test import APIClient

    settings.HEALTH_TIMEOUT = HEALTHY_PARTS_DEADLINE
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/tasks/").status_code == 401
    assert client.get("/api/health/").status_code == 401


def test_session_authentication_works_and_enforces_csrf(user: Any, task_in: Any) -> None:
    from rest_framework.test import APIClient

    task = task_in("running")
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-alice-123")
    assert client.get(f"/api/tasks/{task.pk}").status_code == 200
    response = client.post(f"/api/tasks/{task.pk}/cancel?confirm=true")
    assert response.status_code == 403
    assert "CSRF" in response.data["detail"]
    assert Task.objects.get(pk=task.pk).state == "running"
