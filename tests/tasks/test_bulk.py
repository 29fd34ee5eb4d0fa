"""Bulk actions never half-apply; the deletion breaker judges a deliberate bulk by its size and the actor's rights;
the confirmation page says beforehand when it would be refused; export of the selected tasks."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest
from django.db import DatabaseError
from django.urls import reverse

from retention.breaker import DeletionRefused, DeletionsSuspended, breaker
from retention.models import DeletionEvent
from tasks import hooks, services
from tasks.admin.actions import ACTIONS, perform
from tasks.audit import Channel
from tasks.models import Task, TaskHistory
from tasks.records import CSV_FIELDS
from tests.api_support import client_for, grant
from tests.tasks.test_admin import INELIGIBLE, SETUP, messages_of, staff_with

pytestmark = pytest.mark.django_db

CONFIRM = "admin:tasks_task_confirm"


@pytest.fixture(autouse=True)
def small_limits(settings):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 5
    settings.DELETE_BULK_MAX = 8
    settings.DELETE_TASKS_PER_MINUTE = 10


@pytest.fixture
def operator(django_user_model):
    return staff_with(django_user_model, "soft_delete_task", "restore_task", "recover_task", "cancel_task", "add_task")


def history_rows(tasks):
    return TaskHistory.objects.filter(task__in=[t.pk for t in tasks]).count()


def soft_delete_all(tasks, user, reason="clean-up"):
    return perform(ACTIONS["soft_delete"], [t.pk for t in tasks], user=user, reason=reason)


# --- The service: all or nothing, one deliberate deletion operation.


def test_a_bulk_above_the_per_minute_threshold_is_applied_whole_and_counted_as_one_event(make_task, operator):
    tasks = [make_task(title=f"bulk {i}") for i in range(7)]  # more than the 5 deletions a minute
    done = soft_delete_all(tasks, operator, reason="ticket OPS-9")
    assert len(done) == 7 and Task.objects.deleted().count() == 7
    event = DeletionEvent.objects.get()
    assert (event.kind, event.task_count, event.actor, event.channel) == ("soft_delete", 7, "operator", "admin")
    assert not breaker().is_tripped
    rows = TaskHistory.objects.filter(task__in=[t.pk for t in tasks], event="soft_delete")
    assert rows.count() == 7 and {(r.actor, r.channel, r.reason) for r in rows} == {
        ("operator", "admin", "ticket OPS-9")
    }


def test_a_bulk_over_the_bulk_limit_is_refused_whole_without_tripping(make_task, operator):
    tasks = [make_task(title=f"big {i}") for i in range(9)]
    before = history_rows(tasks)
    with pytest.raises(services.BulkRefused, match="over the limit of one bulk soft delete"):
        soft_delete_all(tasks, operator)
    assert Task.objects.deleted().count() == 0
    assert history_rows(tasks) == before
    assert not DeletionEvent.objects.exists() and not breaker().is_tripped


def test_a_loop_of_single_api_deletions_still_trips_the_breaker_at_the_threshold(make_task, user):
    deleter = client_for(grant(user, "soft_delete_task"))
    tasks = [make_task(title=f"loop {i}") for i in range(7)]
    codes = [
        deleter.delete(f"/api/tasks/{t.pk}?confirm=true", {"reason": "script"}, format="json").status_code
        for t in tasks
    ]
    assert codes[:5] == [200] * 5 and codes[5:] == [409, 409]
    assert breaker().is_tripped and "deletion spike: 6 deletions within a minute" in breaker().tripped_reason
    assert Task.objects.deleted().count() == 5
    assert list(DeletionEvent.objects.values_list("task_count", flat=True)) == [1] * 5


def test_a_tripped_breaker_refuses_a_bulk_whole(make_task, operator, settings):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    with pytest.raises(DeletionsSuspended):
        hooks.admit_deletion(kind="soft_delete", actor="script", channel="api")
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 5
    tasks = [make_task(title=f"after {i}") for i in range(2)]
    with pytest.raises(services.BulkRefused, match="deletions are suspended"):
        soft_delete_all(tasks, operator)
    assert Task.objects.deleted().count() == 0 and not DeletionEvent.objects.exists()


def test_repeated_bulks_count_by_their_size_for_staff(make_task, operator):
    soft_delete_all([make_task(title=f"first {i}") for i in range(6)], operator)
    second = [make_task(title=f"second {i}") for i in range(6)]  # 12 tasks within a minute > 10
    with pytest.raises(services.BulkRefused, match="12 tasks soft-deleted within a minute"):
        soft_delete_all(second, operator)
    assert breaker().is_tripped and Task.objects.deleted().count() == 6


def test_a_superuser_is_capped_by_operations_a_minute_not_by_tasks(make_task, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    for batch in range(2):
        soft_delete_all([make_task(title=f"{batch}-{i}") for i in range(6)], root)
    assert Task.objects.deleted().count() == 12 and not breaker().is_tripped


def test_a_soft_delete_of_many_tasks_must_be_deliberate():
    with pytest.raises(DeletionRefused, match="must be a confirmed bulk action"):
        hooks.admit_deletion(kind="soft_delete", actor="script", channel="api", task_count=3)
    assert not DeletionEvent.objects.exists() and not breaker().is_tripped


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_task_that_became_ineligible_meanwhile_means_nothing_is_applied(make_task, operator, action):
    good = SETUP[action](make_task)
    changed = INELIGIBLE[action](make_task)  # listed when the page opened; someone else acted on it since
    before = history_rows([good, changed])
    snapshot = list(Task.objects.filter(pk__in=[good.pk, changed.pk]).values().order_by("pk"))
    with pytest.raises(services.BulkRefused, match=f"task {changed.pk} changed since it was selected"):
        perform(ACTIONS[action], [good.pk, changed.pk], user=operator, reason="mixed")
    assert history_rows([good, changed]) == before
    assert list(Task.objects.filter(pk__in=[good.pk, changed.pk]).values().order_by("pk")) == snapshot
    assert not DeletionEvent.objects.filter(actor="operator").exists()  # a stale selection is not counted


def test_a_database_error_midway_rolls_back_every_change(make_task):
    tasks = [make_task(title=f"db {i}") for i in range(3)]
    before = history_rows(tasks)

    def cancel_then_fail(task):
        if task.pk == tasks[2].pk:
            raise DatabaseError("disk I/O error")
        return services.cancel(task.pk, actor="system:test", channel=Channel.SYSTEM, reason="bulk")

    with pytest.raises(services.BulkRefused, match="the database refused the change: disk I/O error"):
        services.apply_to_all([t.pk for t in tasks], cancel_then_fail, refusal=lambda task: None)
    assert set(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("state", flat=True)) == {"pending"}
    assert history_rows(tasks) == before


def test_a_vanished_task_means_nothing_is_applied(make_task, operator):
    task = make_task()
    ghost = uuid.uuid4()
    with pytest.raises(services.BulkRefused, match=f"task {ghost} no longer exists"):
        perform(ACTIONS["cancel"], [task.pk, ghost], user=operator, reason="x")
    assert Task.objects.get(pk=task.pk).state == "pending"


# --- The confirmation page says beforehand, and the POST checks again.


def confirm_page(client, action, tasks):
    return client.get(reverse(CONFIRM, args=[action]) + "?" + "&".join(f"ids={t.pk}" for t in tasks))


def test_the_page_refuses_beforehand_a_bulk_over_the_limit_and_a_forced_post_changes_nothing(
    client, make_task, operator
):
    tasks = [make_task(title=f"over {i}") for i in range(9)]
    client.force_login(operator)
    page = confirm_page(client, "soft_delete", tasks)
    html = page.content.decode()
    assert 'id="crux-refusal"' in html and "DELETE_BULK_MAX = 8" in html
    assert 'id="crux-confirm"' not in html and 'id="crux-confirm-form"' not in html
    forced = client.post(
        reverse(CONFIRM, args=["soft_delete"]), {"ids": [t.pk for t in tasks], "reason": "forced", "confirm": "yes"}
    )
    assert "over the limit of one bulk soft delete" in "".join(messages_of(forced))
    assert Task.objects.deleted().count() == 0 and not DeletionEvent.objects.exists()


def test_the_page_warns_when_the_breaker_would_trip_or_is_tripped(client, make_task, operator, user):
    client.force_login(operator)
    for i in range(5):
        services.soft_delete(make_task(title=f"api {i}").pk, user=user, channel=Channel.API, reason="script")
    tasks = [make_task(title=f"next {i}") for i in range(2)]
    html = confirm_page(client, "soft_delete", tasks).content.decode()
    assert "the deletion breaker would trip and refuse it" in html and 'id="crux-confirm"' not in html
    assert not breaker().is_tripped  # the page only looks
    with pytest.raises(DeletionsSuspended):
        services.soft_delete(tasks[0].pk, user=user, channel=Channel.API, reason="script")
    html = confirm_page(client, "soft_delete", tasks).content.decode()
    assert "deletion spike: 6 deletions within a minute" in html and 'id="crux-confirm"' not in html
    # Other actions are not deletions: the page lets them through.
    assert 'id="crux-confirm"' in confirm_page(client, "cancel", tasks).content.decode()


def test_the_page_within_the_limits_confirms_and_applies_the_whole_bulk(client, make_task, operator):
    tasks = [make_task(title=f"ok {i}") for i in range(7)]
    client.force_login(operator)
    page = confirm_page(client, "soft_delete", tasks)
    assert page.context["refusal"] is None and 'id="crux-confirm"' in page.content.decode()
    done = client.post(
        reverse(CONFIRM, args=["soft_delete"]),
        {"ids": [t.pk for t in tasks], "reason": "whole bulk", "confirm": "yes"},
        follow=True,
    )
    assert any("Soft-deleted 7 tasks" in str(m) for m in done.context["messages"])
    assert Task.objects.deleted().count() == 7 and DeletionEvent.objects.get().task_count == 7


def test_the_confirmation_is_refused_without_permission_and_without_confirming(client, make_task, django_user_model):
    tasks = [make_task(title=f"p {i}") for i in range(2)]
    url = reverse(CONFIRM, args=["soft_delete"])
    data = {"ids": [t.pk for t in tasks], "reason": "no right", "confirm": "yes"}
    client.force_login(staff_with(django_user_model, "cancel_task"))
    assert client.post(url, data).status_code == 403
    client.force_login(staff_with(django_user_model, "soft_delete_task", username="allowed"))
    assert client.post(url, {**data, "confirm": ""}).status_code == 200  # the page again, nothing done
    assert Task.objects.deleted().count() == 0 and not DeletionEvent.objects.exists()


# --- Export of the selected tasks.


def export(client, fmt, tasks):
    response = client.post(
        reverse("admin:tasks_task_changelist"),
        {"action": f"export_{fmt}", "_selected_action": [t.pk for t in tasks], "index": 0},
    )
    assert response.status_code == 200 and response.streaming
    assert "attachment;" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


def test_export_selected_as_csv_and_json_with_secrets_redacted(client, make_task, django_user_model):
    chosen = [
        make_task(title="exported one", description="call it with api_key=sk-live-abcdefghijklmnop1234"),
        make_task(title="exported two"),
    ]
    make_task(title="not selected")
    client.force_login(staff_with(django_user_model))  # view_task only
    rows = list(csv.reader(io.StringIO(export(client, "csv", chosen))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r[1] for r in rows[1:]] == ["exported one", "exported two"]
    assert rows[1][0] == str(chosen[0].pk) and rows[1][CSV_FIELDS.index("owner")] == "alice"
    lines = [json.loads(line) for line in export(client, "json", chosen).splitlines()]
    assert [entry["task"]["fields"]["title"] for entry in lines] == ["exported one", "exported two"]
    assert lines[0]["history"][0]["fields"]["event"] == "created"
    everything = json.dumps(lines) + json.dumps(rows)
    assert "sk-live-abcdefghijklmnop1234" not in everything and "[REDACTED]" in everything


def test_export_needs_the_view_permission(client, make_task, django_user_model):
    task = make_task()
    user = django_user_model.objects.create_user("nobody", password="pw-nobody-123", is_staff=True)
    client.force_login(user)
    response = client.post(
        reverse("admin:tasks_task_changelist"), {"action": "export_csv", "_selected_action": [task.pk], "index": 0}
    )
    assert response.status_code == 403
