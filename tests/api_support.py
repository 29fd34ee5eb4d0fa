"""Fixtures and helpers of the API tests (loaded with ``pytest_plugins = ["tests.api_support"]``).

Clients authenticate with real DRF tokens; tasks are created and moved through
the services, so every fixture task has its complete history. It holds no
assertions (PYTEST_DONT_REWRITE: test modules import it before pytest loads it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tasks import services
from tasks.audit import Channel, audited
from tasks.models import Task

ROLES = ("anonymous", "owner", "other", "staff", "staff_perm", "superuser")
TASK_PERMISSIONS = ("soft_delete_task", "restore_task", "recover_task", "cancel_task", "add_taskoutput")
# How each state is reached from pending, through declared transitions only.
PATHS = {
    "pending": [],
    "queued": ["queued"],
    "running": ["queued", "running"],
    "completed": ["queued", "running", "completed"],
    "failed": ["queued", "running", "failed"],
    "cancelled": ["cancelled"],
    "interrupted": ["queued", "running", "interrupted"],
}
TEST_ACTOR = "system:test"


def grant(user: Any, *codenames: str) -> Any:
    """Give ``user`` task permissions (fresh instance: Django caches permissions per instance)."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


def client_for(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def staff_perm(django_user_model: Any) -> Any:
    staffer = django_user_model.objects.create_user("staff-perm", password="pw-staff-perm-123", is_staff=True)
    return grant(staffer, *TASK_PERMISSIONS)


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@localhost", "pw-root-123")


@pytest.fixture
def users(user: Any, other_user: Any, staff: Any, staff_perm: Any, superuser: Any) -> dict[str, Any]:
    """One user per role of the permission matrix (``anonymous`` is None)."""
    return {
        "anonymous": None,
        "owner": user,
        "other": other_user,
        "staff": staff,
        "staff_perm": staff_perm,
        "superuser": superuser,
    }


@pytest.fixture
def clients(users: dict[str, Any]) -> dict[str, APIClient]:
    return {role: client_for(u) for role, u in users.items()}


@pytest.fixture
def api(user: Any) -> APIClient:
    """A token-authenticated client of the owner (``user``)."""
    return client_for(user)


def move(task: Task, state: str) -> Task:
    for step in PATHS[state]:
        task = services.transition(task.pk, step, actor=TEST_ACTOR, channel=Channel.SYSTEM, reason="test setup")
    return task


@pytest.fixture
def task_in(user: Any) -> Callable[..., Task]:
    """``task_in(state, owner=user, deleted=False, **fields)``: a task reached through the services."""

    def make(state: str = "pending", *, owner: Any = None, deleted: bool = False, **fields: Any) -> Task:
        owner = owner or user
        fields.setdefault("title", f"a {state} task")
        task = services.create_task(owner=owner, actor=owner, channel=Channel.API, **fields)
        task = move(task, state)
        if deleted:
            task = services.soft_delete(task.pk, user=owner, channel=Channel.API, reason="test setup")
        return Task.objects.get(pk=task.pk)

    return make


def snapshot(task: Task) -> tuple[Any, ...]:
    """What a refused request must leave unchanged."""
    fresh = Task.objects.get(pk=task.pk)
    return fresh.state, fresh.deleted_at, fresh.history_count, fresh.outputs.count()


def old_completed_task(task_in: Callable[..., Task]) -> Task:
    """A task completed 30 days ago: the default retention policy lets a purge take it."""
    task = task_in("completed")
    task.completed_at = timezone.now() - timedelta(days=30)
    with audited("system:test", channel=Channel.SYSTEM, reason="age for the test"):
        task.save()
    return task
