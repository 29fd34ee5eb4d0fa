"""One requeue service behind both doors (the API's recover, the admin's requeue): the same states, and never an
attempt past ``max_attempts``."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import AttemptLimitReached
from tasks.models import Task
from tasks.states import TaskState
from tests.api_support import PATHS, client_for, snapshot

pytestmark = pytest.mark.django_db


def task_at(user: Any, state: str, *, attempts: int = 1, max_attempts: int = 3) -> Task:
    """A task in ``state`` whose last attempt was number ``attempts`` (through the services, with its history)."""
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title=f"{state} task", max_attempts=3)
    for step in ["queued", "running", "cancelled"] if state == "cancelled" else PATHS[state]:
        extra = {"attempt_count": attempts} if step == TaskState.RUNNING else {}
        task = services.transition(task.pk, step, actor="system:test", channel=Channel.SYSTEM, reason="setup", **extra)
    if max_attempts != 3:
        task = services.update_task(
            task.pk, actor="system:test", channel=Channel.SYSTEM, reason="setup", max_attempts=max_attempts
        )
    return Task.objects.get(pk=task.pk)


@pytest.fixture
def operator(django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="tasks", codename__in={"view_task", "recover_task"})
    user.user_permissions.add(*perms)
    return user


def requeue_through(door: str, operator: Any, client: Any, task: Task) -> Any:
    if door == "api":
        return client_for(operator).post(f"/api/tasks/{task.pk}/recover", {"reason": "run it again"}, format="json")
    client.force_login(operator)
    return client.post(
        reverse("admin:tasks_task_confirm", args=["requeue"]),
        {"ids": [task.pk], "reason": "run it again", "confirm": "yes"},
        follow=True,
    )


DOORS = ["api", "admin"]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("state", list(PATHS))
def test_both_doors_requeue_exactly_the_same_states(door, state, user, operator, client):
    task = task_at(user, state)
    requeue_through(door, operator, client, task)
    after = Task.objects.get(pk=task.pk)
    requeued = after.history.filter(state_from=state, state_to="queued", reason="run it again").exists()
    assert requeued == (state in services.REQUEUE_ON_RECOVER)
    assert requeued == (services.requeue_refusal(task) is None)
    if requeued:
        assert after.state == "queued" and after.attempt_count == 1
    else:
        assert after.state == state


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("state", sorted(services.REQUEUE_ON_RECOVER))
def test_no_door_grants_an_attempt_past_the_limit(door, state, user, operator, client):
    task = task_at(user, state, attempts=3, max_attempts=3)
    before = snapshot(task)
    response = requeue_through(door, operator, client, task)
    assert snapshot(task) == before, "a refused requeue writes nothing"
    if door == "api":
        assert response.status_code == 409
        assert "attempt limit reached: 3 of 3" in response.json()["max_attempts"][0]
    else:
        assert any("attempt limit reached: 3 of 3" in str(m) for m in response.context["messages"])


def test_raising_the_limit_lets_the_task_run_again(user):
    task = task_at(user, "failed", attempts=2, max_attempts=2)
    with pytest.raises(AttemptLimitReached):
        services.recover(task.pk, actor="ops", channel=Channel.COMMAND, reason="again")
    services.update_task(task.pk, actor="ops", channel=Channel.COMMAND, reason="one more try", max_attempts=3)
    task, requeued = services.recover(task.pk, actor="ops", channel=Channel.COMMAND, reason="again")
    assert requeued and task.state == "queued"


def test_the_admin_confirmation_page_lists_an_exhausted_task_as_skipped(user, operator, client):
    task = task_at(user, "interrupted", attempts=3, max_attempts=3)
    client.force_login(operator)
    page = client.get(reverse("admin:tasks_task_confirm", args=["requeue"]) + f"?ids={task.pk}")
    assert page.status_code == 200
    assert "attempt limit reached" in page.content.decode()
