"""The admin submits tasks that run: the add form queues through ``services.submit_task`` (published to the real
broker, or waiting for its ``run_at``), refuses bad input with field messages and writes nothing, and a pending
task can be queued from the list through the confirmation page."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from persistence import dispatch as broker
from tasks.models import Task, TaskHistory
from tests.conftest import queue_keys
from tests.tasks.test_admin import confirm_url, messages_of, move, staff_with

pytestmark = pytest.mark.django_db

ADD = "admin:tasks_task_add"
CONFIRM = reverse("admin:tasks_task_confirm", args=["queue"])


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


def take_messages() -> list[dict]:
    """Consume every message waiting on this run's default queue (all priority steps): the Celery task ids."""
    client = broker.client()
    taken = []
    for key in queue_keys():
        while (raw := client.rpop(key)) is not None:
            taken.append(json.loads(raw)["headers"]["id"])
    return taken


def form_data(**overrides):
    data = {
        "title": "made by staff",
        "description": "",
        "handler": "sleep",
        "payload": '{"seconds": 0.1}',
        "run_at": "",
        "owner": "",
        "queue": "",
        "priority": "",
        "max_attempts": "",
        "retry_backoff": "",
        "soft_time_limit": "",
        "time_limit": "",
        "target_dir": ".",
        "acceptance_criteria": "{}",
        "metadata": "{}",
        "change_reason": "",
    }
    data.update(overrides)
    return {name: value for name, value in data.items() if value is not None}


def post(client, django_capture_on_commit_callbacks, **overrides):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(reverse(ADD), form_data(**overrides))


def test_the_add_form_submits_a_queued_task_that_is_published(client, superuser, django_capture_on_commit_callbacks):
    take_messages()
    client.force_login(superuser)
    page = client.get(reverse(ADD)).content.decode()
    assert 'name="payload"' in page and 'name="run_at"' in page and '<option value="sleep">' in page
    assert "&quot;seconds&quot;" in page, "the handler's payload schema is not shown"

    response = post(
        client,
        django_capture_on_commit_callbacks,
        priority="7",
        soft_time_limit="2",
        time_limit="5",
        change_reason="a re-run for a customer",
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    task = Task.objects.get(title="made by staff")
    assert (task.state, task.owner, task.handler, task.request_payload) == (
        "queued",
        superuser,
        "sleep",
        {"seconds": 0.1},
    )
    assert (task.priority, task.soft_time_limit, task.time_limit, task.run_after) == (7, 2.0, 5.0, None)
    assert task.dispatch_count == 1 and task.dispatched_at is not None
    row = TaskHistory.objects.get(task=task)
    assert (row.event, row.state_to, row.actor, row.channel, row.reason) == (
        "created",
        "queued",
        "root",
        "admin",
        "a re-run for a customer",
    )
    assert take_messages() == [task.celery_task_id], "not published on the run's queue"


def test_the_owner_field_submits_for_someone_else(client, superuser, user, django_capture_on_commit_callbacks):
    client.force_login(superuser)
    assert post(client, django_capture_on_commit_callbacks, owner=str(user.pk)).status_code == 302
    task = Task.objects.get()
    assert (task.owner, task.history.get().actor) == (user, "root")
    take_messages()


def test_blank_options_take_the_handler_defaults(client, superuser, django_capture_on_commit_callbacks):
    client.force_login(superuser)
    assert post(client, django_capture_on_commit_callbacks, handler="echo", payload="").status_code == 302
    task = Task.objects.get()
    assert (task.max_attempts, task.priority, task.request_payload, task.queue) == (3, 5, {}, "")
    take_messages()


def test_a_run_at_ahead_waits_unpublished(client, superuser, django_capture_on_commit_callbacks):
    take_messages()
    client.force_login(superuser)
    run_at = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    response = post(client, django_capture_on_commit_callbacks, run_at=run_at.isoformat())
    assert response.status_code == 302, response.content.decode()[:2000]
    task = Task.objects.get()
    assert (task.state, task.run_after, task.dispatched_at, task.dispatch_count) == ("queued", run_at, None, 0)
    assert "starts at" in task.history.get().reason
    assert take_messages() == []


def test_a_run_at_in_the_past_means_now(client, superuser, django_capture_on_commit_callbacks):
    client.force_login(superuser)
    run_at = timezone.now() - timedelta(hours=1)
    assert post(client, django_capture_on_commit_callbacks, run_at=run_at.isoformat()).status_code == 302
    task = Task.objects.get()
    assert task.run_after is None and task.dispatch_count == 1
    assert take_messages() == [task.celery_task_id]


BAD_INPUT = [
    ({"payload": '{"seconds": "soon"}'}, "payload", "seconds"),
    ({"payload": '{"seconds": -1}'}, "payload", "seconds"),
    ({"payload": "[1, 2]"}, "payload", "JSON object"),
    ({"payload": "{not json"}, "payload", "JSON"),
    ({"handler": "no_such_handler"}, "handler", "not one of the available choices"),
    ({"handler": ""}, "handler", "required"),
    ({"title": ""}, "title", "required"),
    ({"priority": "high"}, "priority", "whole number"),
    ({"priority": "10"}, "priority", "less than or equal to 9"),
    ({"max_attempts": "1e400"}, "max_attempts", "whole number"),
    ({"max_attempts": "99999999999999999999999"}, "max_attempts", "less than or equal to 100"),
    ({"retry_backoff": "NaN"}, "retry_backoff", "number"),
    ({"retry_backoff": "1e300"}, "retry_backoff", "less than or equal to"),
    ({"time_limit": "inf"}, "time_limit", "number"),
    ({"soft_time_limit": "abc"}, "soft_time_limit", "number"),
    ({"soft_time_limit": "5", "time_limit": "5"}, "soft_time_limit", "less than time_limit"),
    ({"queue": "no-such-queue"}, "queue", "Unknown queue"),
    ({"queue": "bad queue!"}, "queue", "letters, digits"),
    ({"run_at": "tomorrow"}, "run_at", "date/time"),
    ({"owner": "999999"}, "owner", "valid choice"),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_INPUT, ids=[case[1] for case in BAD_INPUT])
def test_bad_input_shows_field_errors_and_writes_nothing(
    client, superuser, django_capture_on_commit_callbacks, overrides, field, message
):
    take_messages()
    client.force_login(superuser)
    response = post(client, django_capture_on_commit_callbacks, **overrides)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field]), errors
    assert not Task.objects.exists() and not TaskHistory.objects.exists()
    assert take_messages() == []


def test_the_change_form_of_an_existing_task_still_edits_it(client, superuser, make_task):
    task = make_task(title="old title")
    client.force_login(superuser)
    page = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    assert 'name="run_at"' not in page and 'name="payload"' not in page


# --- Queuing pending tasks.


def test_the_queue_action_queues_pending_tasks_and_refuses_a_selection_with_others(
    client, django_user_model, make_task, django_capture_on_commit_callbacks
):
    take_messages()
    operator = staff_with(django_user_model, "add_task")
    pending = make_task(title="pending one")
    cancelled = make_task(title="cancelled one")
    move(cancelled, "cancelled")
    client.force_login(operator)
    page = client.get(confirm_url("queue", pending, cancelled))
    assert page.status_code == 200
    assert [row["task"].pk for row in page.context["rows"]] == [pending.pk]
    assert [row["why"] for row in page.context["skipped"]] == ["not pending (cancelled)"]

    refused = client.post(CONFIRM, {"ids": [pending.pk, cancelled.pk], "confirm": "yes", "reason": "forced"})
    assert any("Nothing was changed" in m for m in messages_of(refused))  # all or nothing
    assert Task.objects.get(pk=pending.pk).state == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CONFIRM, {"ids": [pending.pk], "confirm": "yes", "reason": "forgotten at creation"})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.state == "queued" and pending.dispatch_count == 1
    row = pending.history.latest("seq")
    assert (row.state_from, row.state_to, row.actor, row.channel, row.reason) == (
        "pending",
        "queued",
        "operator",
        "admin",
        "forgotten at creation",
    )
    assert Task.objects.get(pk=cancelled.pk).state == "cancelled"
    assert take_messages() == [pending.celery_task_id]


def test_the_queue_action_needs_a_confirmation_with_a_reason(client, django_user_model, make_task):
    operator = staff_with(django_user_model, "add_task")
    task = make_task()
    client.force_login(operator)
    before = TaskHistory.objects.filter(task=task).count()
    assert client.post(CONFIRM, {"ids": [task.pk], "reason": "no confirm"}).status_code == 200
    assert client.post(CONFIRM, {"ids": [task.pk], "confirm": "yes", "reason": ""}).status_code == 200
    assert Task.objects.get(pk=task.pk).state == "pending"
    assert TaskHistory.objects.filter(task=task).count() == before


def test_the_queue_action_is_refused_without_permission(client, django_user_model, make_task):
    operator = staff_with(django_user_model, "change_task", "recover_task", "cancel_task")
    task = make_task()
    client.force_login(operator)
    assert client.get(confirm_url("queue", task)).status_code == 403
    response = client.post(CONFIRM, {"ids": [task.pk], "confirm": "yes", "reason": "sneaky"})
    assert response.status_code == 403
    changelist = client.post(
        reverse("admin:tasks_task_changelist"), {"action": "queue_selected", "_selected_action": [str(task.pk)]}
    )
    assert changelist.status_code in (200, 302)
    assert Task.objects.get(pk=task.pk).state == "pending"
    assert TaskHistory.objects.filter(task=task).count() == 1


def test_a_pending_task_page_offers_the_queue_button(client, superuser, make_task):
    task = make_task()
    client.force_login(superuser)
    page = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert any(button["label"] == "Queue" for button in page.context["task_actions"])
