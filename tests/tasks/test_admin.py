"""The staff console: actions through confirmation pages, permissions, history, trash, read-only admins."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks import services
from tasks.admin.actions import ACTIONS
from tasks.admin.lists import CappedCountPaginator, filter_choices_cache
from tasks.audit import Channel
from tasks.exceptions import TaskError
from tasks.models import CLISession, CLISessionCommand, Task, TaskHistory, TaskOutput, UserPreference

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:tasks_task_changelist"


@pytest.fixture(autouse=True)
def fresh_caches():
    from crux import dashboard

    filter_choices_cache.clear()
    dashboard.clear_cache()
    yield
    filter_choices_cache.clear()
    dashboard.clear_cache()


def staff_with(django_user_model, *codenames, username="operator"):
    """A staff user holding exactly these ``tasks`` permissions (plus view, so pages open)."""
    user = django_user_model.objects.create_user(username, password="pw-operator-1", is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="tasks", codename__in={"view_task", *codenames})
    user.user_permissions.add(*perms)
    return user


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


def move(task, *states):
    for state in states:
        task = services.transition(task.pk, state, actor="system:test", channel=Channel.SYSTEM, reason="test")
    return task


def confirm_url(action, *tasks):
    query = "&".join(f"ids={t.pk}" for t in tasks)
    return reverse("admin:tasks_task_confirm", args=[action]) + ("?" + query if query else "")


def history_count(task):
    return TaskHistory.objects.filter(task=task).count()


def messages_of(response):
    return [str(m) for m in response.wsgi_request._messages]


# Each action: the task state it applies to, and what a confirmed run leaves behind.
def _alive(make_task):
    return make_task(title="alive one")


def _deleted(make_task):
    task = make_task(title="deleted one")
    return services.soft_delete(task.pk, user=task.owner, channel=Channel.API, reason="clean-up")


def _failed(make_task):
    return move(make_task(title="failed one"), "queued", "running", "failed")


def _queued(make_task):
    return move(make_task(title="queued one"), "queued")


SETUP = {"soft_delete": _alive, "restore": _deleted, "requeue": _failed, "cancel": _queued, "queue": _alive}
EXPECTED = {
    "soft_delete": ("soft_delete", lambda t: t.deleted_at is not None),
    "restore": ("restore", lambda t: t.deleted_at is None),
    "requeue": ("transition", lambda t: t.state == "queued"),
    "cancel": ("transition", lambda t: t.state == "cancelled"),
    "queue": ("transition", lambda t: t.state == "queued"),
}
INELIGIBLE = {
    "soft_delete": _deleted,
    "restore": _alive,
    "requeue": _alive,
    "cancel": lambda mk: _cancelled(mk),
    "queue": _queued,
}


def _cancelled(make_task):
    task = make_task(title="cancelled one")
    return services.cancel(task.pk, actor="system:test", channel=Channel.SYSTEM, reason="test")


ACTION_NAMES = list(ACTIONS)


# --- Each action: permission refused, confirmation required, history written, forced URL 403.


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_action_hidden_and_forced_urls_refused_without_its_permission(client, django_user_model, make_task, action):
    task = SETUP[action](make_task)
    others = [a for a in ACTION_NAMES if a != action]
    user = staff_with(django_user_model, *(ACTIONS[a].permission for a in others))
    client.force_login(user)
    rows = history_count(task)

    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    choices = [value for value, _ in page.context["action_form"].fields["action"].choices]
    assert ACTIONS[action].admin_action_name not in choices
    assert {ACTIONS[a].admin_action_name for a in others} <= set(choices)

    assert client.get(confirm_url(action, task)).status_code == 403
    forced = client.post(
        reverse("admin:tasks_task_confirm", args=[action]), {"ids": [task.pk], "reason": "forced", "confirm": "yes"}
    )
    assert forced.status_code == 403
    # Posting the hidden action to the changelist does nothing either.
    client.post(reverse(CHANGELIST), {"action": ACTIONS[action].admin_action_name, "_selected_action": [task.pk]})
    assert history_count(task) == rows
    task.refresh_from_db()
    assert not EXPECTED[action][1](task)

    # The task page shows no button for it.
    change = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert confirm_url(action) not in change.content.decode()


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_action_goes_through_a_confirmation_page_listing_exactly_the_selected_tasks(
    client, django_user_model, make_task, action
):
    chosen = [SETUP[action](make_task), SETUP[action](make_task)]
    bystander = SETUP[action](make_task)
    client.force_login(staff_with(django_user_model, ACTIONS[action].permission))
    before = {t.pk: history_count(t) for t in [*chosen, bystander]}

    page = client.post(
        reverse(CHANGELIST), {"action": ACTIONS[action].admin_action_name, "_selected_action": [t.pk for t in chosen]}
    )
    assert page.status_code == 200
    assert page.templates[0].name == "admin/tasks/task/confirm_action.html"
    listed = {row["task"].pk for row in page.context["rows"]}
    assert listed == {t.pk for t in chosen}
    html = page.content.decode()
    assert str(bystander.pk)[:8] not in html
    assert 'name="reason"' in html
    assert f'action="{reverse("admin:tasks_task_confirm", args=[action])}"' in html
    # Nothing happened yet.
    assert {t.pk: history_count(t) for t in [*chosen, bystander]} == before

    url = reverse("admin:tasks_task_confirm", args=[action])
    ids = [t.pk for t in chosen]
    no_reason = client.post(url, {"ids": ids, "reason": "  ", "confirm": "yes"})
    assert no_reason.status_code == 200
    assert no_reason.context["form"].errors["reason"]
    not_confirmed = client.post(url, {"ids": ids, "reason": "good reason"})
    assert not_confirmed.status_code == 200
    assert {t.pk: history_count(t) for t in [*chosen, bystander]} == before


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_confirmed_action_writes_history_with_the_user_as_actor_and_admin_as_channel(
    client, django_user_model, make_task, action
):
    task = SETUP[action](make_task)
    user = staff_with(django_user_model, ACTIONS[action].permission)
    client.force_login(user)
    rows = history_count(task)
    next_url = reverse("admin:tasks_task_change", args=[task.pk])

    response = client.post(
        reverse("admin:tasks_task_confirm", args=[action]),
        {"ids": [task.pk], "reason": f"operator {action} for ticket 42", "confirm": "yes", "next": next_url},
    )
    assert response.status_code == 302
    assert response.url == next_url
    task.refresh_from_db()
    assert EXPECTED[action][1](task)
    assert history_count(task) == rows + 1
    last = TaskHistory.objects.filter(task=task).latest("seq")
    assert last.event == EXPECTED[action][0]
    assert (last.actor, last.actor_user_id, last.channel) == ("operator", user.pk, Channel.ADMIN)
    assert last.reason == f"operator {action} for ticket 42"
    follow = client.get(next_url)
    assert any(ACTIONS[action].past.capitalize() in m for m in messages_of(follow))


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_confirmation_page_lists_ineligible_tasks_as_skipped_and_leaves_them_alone(
    client, django_user_model, make_task, action
):
    good, bad = SETUP[action](make_task), INELIGIBLE[action](make_task)
    client.force_login(staff_with(django_user_model, ACTIONS[action].permission))
    page = client.get(confirm_url(action, good, bad))
    assert [row["task"].pk for row in page.context["rows"]] == [good.pk]
    assert [row["task"].pk for row in page.context["skipped"]] == [bad.pk]
    bad_rows = history_count(bad)
    client.post(
        reverse("admin:tasks_task_confirm", args=[action]),
        {"ids": [good.pk, bad.pk], "reason": "mixed selection", "confirm": "yes"},
    )
    assert history_count(bad) == bad_rows


def test_single_task_buttons_on_the_task_page_follow_permissions(client, django_user_model, make_task):
    task = make_task()
    client.force_login(staff_with(django_user_model, "soft_delete_task", "cancel_task"))
    html = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    assert confirm_url("soft_delete") + f"?ids={task.pk}" in html
    assert confirm_url("cancel") + f"?ids={task.pk}" in html
    assert confirm_url("restore") not in html  # not deleted, and no permission
    assert confirm_url("requeue") not in html
    assert reverse("admin:tasks_task_timeline", args=[task.pk]) in html


def test_a_refusal_from_the_service_is_shown_on_the_page_not_a_500(client, django_user_model, make_task, monkeypatch):
    class DeletionBreakerOpen(TaskError):
        pass

    def tripped(task_id, **kwargs):
        raise DeletionBreakerOpen("deletion circuit breaker is open: 50 deletions in 60 s; acknowledge it first")

    monkeypatch.setattr(services, "mark_deleted", tripped)
    task = make_task()
    client.force_login(staff_with(django_user_model, "soft_delete_task"))
    response = client.post(
        reverse("admin:tasks_task_confirm", args=["soft_delete"]),
        {"ids": [task.pk], "reason": "spike", "confirm": "yes"},
    )
    assert response.status_code == 200
    assert "Nothing was changed" in response.content.decode()
    assert "circuit breaker is open" in "".join(messages_of(response))
    task.refresh_from_db()
    assert task.deleted_at is None


def test_the_deletion_breaker_refusal_shows_on_the_page_and_as_a_banner(client, django_user_model, make_task, settings):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 1
    tasks = [make_task(title=f"spike {i}") for i in range(3)]
    client.force_login(staff_with(django_user_model, "soft_delete_task"))
    url = reverse("admin:tasks_task_confirm", args=["soft_delete"])
    first = client.post(url, {"ids": [tasks[0].pk], "reason": "one", "confirm": "yes"}, follow=True)
    assert any("Soft-deleted 1 task" in m for m in messages_of(first))
    response = client.post(url, {"ids": [t.pk for t in tasks[1:]], "reason": "bulk clean-up", "confirm": "yes"})
    assert response.status_code == 200
    assert "deletions are suspended" in "".join(messages_of(response))
    assert Task.objects.deleted().count() == 1
    assert 'id="crux-deletion-breaker"' in response.content.decode()


def test_a_real_stale_state_during_requeue_is_reported(client, django_user_model, make_task):
    task = _failed(make_task)
    client.force_login(staff_with(django_user_model, "recover_task"))
    page = client.get(confirm_url("requeue", task))
    assert [row["task"].pk for row in page.context["rows"]] == [task.pk]
    move(task, "queued")  # someone else requeued it meanwhile
    rows = history_count(task)
    response = client.post(
        reverse("admin:tasks_task_confirm", args=["requeue"]),
        {"ids": [task.pk], "reason": "retry", "confirm": "yes"},
    )
    assert response.status_code == 200
    assert "queued: only interrupted" in "".join(messages_of(response))
    assert history_count(task) == rows


def test_unknown_action_and_bad_ids(client, superuser, make_task):
    client.force_login(superuser)
    assert client.get(reverse("admin:tasks_task_confirm", args=["purge"])).status_code == 404
    page = client.get(reverse("admin:tasks_task_confirm", args=["cancel"]) + "?ids=not-a-uuid&ids=" + "0" * 32)
    assert page.status_code == 200
    assert page.context["rows"] == []
    assert "not-a-uuid" in page.content.decode()
    empty = client.get(reverse("admin:tasks_task_confirm", args=["cancel"]))
    assert empty.status_code == 302


def test_next_url_to_another_host_is_ignored(client, superuser, make_task):
    task = make_task()
    client.force_login(superuser)
    response = client.post(
        reverse("admin:tasks_task_confirm", args=["cancel"]),
        {"ids": [task.pk], "reason": "stop", "confirm": "yes", "next": "https://evil.example/"},
    )
    assert response.status_code == 302
    assert response.url == reverse(CHANGELIST)


def test_anonymous_and_non_staff_users_are_sent_to_login(client, user, make_task):
    task = make_task()
    for url in (confirm_url("soft_delete", task), reverse("admin:tasks_task_trash")):
        assert client.get(url).status_code == 302
    client.force_login(user)
    response = client.post(
        reverse("admin:tasks_task_confirm", args=["soft_delete"]),
        {"ids": [task.pk], "reason": "x y z", "confirm": "yes"},
    )
    assert response.status_code == 302 and "/login/" in response.url
    task.refresh_from_db()
    assert task.deleted_at is None


# --- No silent delete.


def test_no_delete_action_or_view_for_tasks_even_for_superusers(client, superuser, make_task):
    task = make_task()
    client.force_login(superuser)
    page = client.get(reverse(CHANGELIST))
    choices = [value for value, _ in page.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in choices
    assert client.get(reverse("admin:tasks_task_delete", args=[task.pk])).status_code == 403
    assert client.post(reverse("admin:tasks_task_delete", args=[task.pk]), {"post": "yes"}).status_code == 403
    client.post(reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [task.pk], "post": "yes"})
    assert Task.objects.filter(pk=task.pk, deleted_at__isnull=True).exists()
    change = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    assert reverse("admin:tasks_task_delete", args=[task.pk]) not in change


# --- The list: columns, filters, search, no full counts.


def test_changelist_columns_filters_and_search(client, superuser, make_task, other_user):
    a = make_task(title="alpha report", role="coder", provider="openai", description="needle in here")
    b = make_task(title="beta summary", role="reviewer", provider="anthropic", owner=other_user)
    move(b, "queued", "running", "completed")
    services.soft_delete(a.pk, user=superuser, channel=Channel.ADMIN, reason="dup")
    client.force_login(superuser)

    html = client.get(reverse(CHANGELIST)).content.decode()
    for text in (str(a.pk)[:8], "alpha report", "beta summary", "crux-state", "in trash", "0/3", "Trash"):
        assert text in html
    for name in ("state", "role", "provider", "owner", "deleted", "created"):
        assert f"By {name}" in html or f"by {name}" in html.lower()

    def listed(query):
        response = client.get(reverse(CHANGELIST) + query)
        assert response.status_code == 200, query
        return {t.pk for t in response.context["cl"].result_list}

    assert listed("?state__exact=completed") == {b.pk}
    assert listed("?role=coder") == {a.pk}
    assert listed("?provider=anthropic") == {b.pk}
    assert listed(f"?owner__id__exact={other_user.pk}") == {b.pk}
    assert listed("?deleted=yes") == {a.pk}
    assert listed("?deleted=no") == {b.pk}
    assert listed(f"?q={str(b.pk)[:8]}") == {b.pk}
    assert listed(f"?q={b.pk}") == {b.pk}
    assert listed("?q=needle") == {a.pk}
    assert listed("?q=summary") == {b.pk}
    year = a.created_at.year
    assert listed(f"?created_at__year={year}") == {a.pk, b.pk}
    assert listed(f"?created_at__year={year - 1}") == set()


def test_list_pages_never_count_the_whole_table(client, superuser, make_task, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 5)
    for i in range(8):
        make_task(title=f"bulk {i}")
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    cl = response.context["cl"]
    assert cl.result_count == 5 and cl.paginator.capped
    assert "5+" in response.content.decode()
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the paginator should count (a bounded number of rows)"
    for sql in counts:
        assert re.search(r"LIMIT\s+6", sql), sql
    # The date drill-down asks MIN/MAX, not DISTINCT over the rows.
    assert not any("DISTINCT" in q["sql"].upper() and "created_at" in q["sql"] for q in queries.captured_queries)


def test_trash_lists_deleted_tasks_with_who_when_why_and_only_restore(client, django_user_model, make_task):
    _alive, gone = make_task(title="still here"), make_task(title="thrown away")
    deleter = django_user_model.objects.create_user("deleter", password="pw-deleter-1")
    services.soft_delete(gone.pk, user=deleter, channel=Channel.API, reason="duplicate of another job")
    client.force_login(staff_with(django_user_model, "restore_task", "soft_delete_task", "cancel_task"))

    response = client.get(reverse("admin:tasks_task_trash"))
    assert response.status_code == 200
    assert {t.pk for t in response.context["cl"].result_list} == {gone.pk}
    html = response.content.decode()
    for text in ("thrown away", "deleter", "duplicate of another job", "Trash"):
        assert text in html
    assert "still here" not in html
    choices = [value for value, _ in response.context["action_form"].fields["action"].choices if value]
    assert choices == ["restore_selected"]

    page = client.post(reverse("admin:tasks_task_trash"), {"action": "restore_selected", "_selected_action": [gone.pk]})
    assert page.status_code == 200 and [r["task"].pk for r in page.context["rows"]] == [gone.pk]
    assert page.context["next_url"].startswith(reverse("admin:tasks_task_trash"))
    done = client.post(
        reverse("admin:tasks_task_confirm", args=["restore"]),
        {"ids": [gone.pk], "reason": "needed after all", "confirm": "yes", "next": page.context["next_url"]},
    )
    assert done.status_code == 302 and done.url.startswith(reverse("admin:tasks_task_trash"))
    gone.refresh_from_db()
    assert gone.deleted_at is None
    assert client.get(reverse("admin:tasks_task_trash")).context["cl"].result_list.count() == 0


def test_trash_needs_view_permission(client, django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    client.force_login(nobody)
    assert client.get(reverse("admin:tasks_task_trash")).status_code == 403


def test_trash_drills_down_by_deletion_date(client, superuser, make_task):
    task = make_task()
    services.soft_delete(task.pk, user=superuser, channel=Channel.ADMIN, reason="old")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_task_trash") + f"?deleted_at__year={task.created_at.year}")
    assert response.status_code == 200
    assert response.context["cl"].date_hierarchy == "deleted_at"


# --- The task page.


def test_task_page_groups_fields_and_shows_history_outputs_metrics(client, superuser, make_task):
    task = move(make_task(title="inspect me"), "queued", "running")
    services.add_output(task.pk, output_type="stdout", content="hello from the worker")
    Task.objects.filter(pk=task.pk).update(iterations=7, total_tokens=1234, stop_reason="end_turn")
    task = move(task, "completed")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    groups = ("Provider", "Repository", "Execution", "Timing", "Outcome", "Metrics", "Inputs", "Deletion")
    for heading in (*groups, "Audit trail"):
        assert f">{heading}<" in html
    assert "hello from the worker" in html and "1234" in html and "end_turn" in html
    history = next(f for f in response.context["inline_admin_formsets"] if f.opts.model is TaskHistory)
    seqs = [form.instance.seq for form in history.formset.forms]
    assert seqs == sorted(seqs, reverse=True) == [4, 3, 2, 1]
    assert reverse("admin:tasks_task_timeline", args=[task.pk]) in html
    assert 'name="change_reason"' in html


def test_view_only_staff_sees_the_page_read_only_with_history(client, django_user_model, make_task):
    task = move(make_task(), "queued")
    client.force_login(staff_with(django_user_model))
    response = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="change_reason"' not in html and 'name="title"' not in html
    assert "system:test" in html  # the history inline is visible to whoever may view the task
    assert client.post(reverse("admin:tasks_task_change", args=[task.pk]), {"title": "x"}).status_code == 403


def test_edit_through_the_admin_needs_a_reason_and_writes_history(client, superuser, make_task):
    task = make_task(title="old title")
    client.force_login(superuser)
    url = reverse("admin:tasks_task_change", args=[task.pk])
    form = client.get(url).context["adminform"].form
    data = {name: form.initial.get(name, "") for name in form.fields}
    data.update(
        {
            "title": "new title",
            "acceptance_criteria": "{}",
            "metadata": "{}",
            "full_access": "",
            "target_dir": ".",
            "max_attempts": 3,
        }
    )
    data = {k: ("" if v is None else v) for k, v in data.items() if k != "full_access" or v}
    for prefix in ("metrics", "outputs", "history"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    data["change_reason"] = ""
    refused = client.post(url, data)
    assert refused.status_code == 200 and refused.context["adminform"].form.errors["change_reason"]
    data["change_reason"] = "typo in the title"
    response = client.post(url, data)
    assert response.status_code == 302, getattr(response, "context", {}) and response.context["adminform"].form.errors
    task.refresh_from_db()
    assert task.title == "new title"
    last = TaskHistory.objects.filter(task=task).latest("seq")
    assert (last.event, last.actor, last.channel, last.reason) == ("edit", "root", "admin", "typo in the title")
    assert last.details["changes"]["title"] == ["old title", "new title"]


def test_adding_a_task_in_the_admin_submits_it_and_records_the_reason(client, superuser):
    client.force_login(superuser)
    url = reverse("admin:tasks_task_add")
    page = client.get(url)
    assert page.status_code == 200 and 'name="change_reason"' in page.content.decode()
    data = {
        "title": "made by staff",
        "handler": "echo",
        "target_dir": ".",
        "max_attempts": 3,
        "acceptance_criteria": "{}",
        "metadata": "{}",
        "change_reason": "manual re-run for a customer",
    }
    response = client.post(url, data)
    assert response.status_code == 302
    task = Task.objects.get(title="made by staff")
    assert (task.owner, task.state) == (superuser, "queued")
    row = TaskHistory.objects.get(task=task)
    assert (row.event, row.actor, row.channel, row.reason) == ("created", "root", "admin", data["change_reason"])


# --- The timeline.


def test_timeline_shows_states_durations_actors_and_reasons(client, superuser, make_task):
    task = move(make_task(title="timeline me"), "queued", "running", "failed")
    services.soft_delete(task.pk, user=superuser, channel=Channel.ADMIN, reason="looks broken")
    services.restore(task.pk, user=superuser, channel=Channel.ADMIN, reason="needed for the audit")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_task_timeline", args=[task.pk]))
    assert response.status_code == 200
    timeline = response.context["timeline"]
    assert [s.state for s in timeline.segments] == ["pending", "queued", "running", "failed"]
    assert [e.row.event for e in timeline.events] == [
        "created",
        "transition",
        "transition",
        "transition",
        "soft_delete",
        "restore",
    ]
    assert len(timeline.bands) == 1 and not timeline.bands[0].ongoing
    html = response.content.decode()
    for text in ("looks broken", "needed for the audit", "root", "system:test", "crux-state-bar", "crux-trash-bar"):
        assert text in html
    assert " ms" in html or " s" in html


def test_timeline_of_a_running_task_ends_now_and_is_ongoing(make_task):
    from tasks.admin.timeline import build_timeline, format_duration

    task = move(make_task(), "queued", "running")
    timeline = build_timeline(task)
    assert timeline.segments[-1].state == "running" and timeline.segments[-1].ongoing
    assert sum(s.width for s in timeline.segments) == pytest.approx(100, abs=0.01)
    assert format_duration(None) == ""
    from datetime import timedelta

    assert format_duration(timedelta(seconds=0.25)) == "250 ms"
    assert format_duration(timedelta(seconds=75)) == "1 min 15 s"
    assert format_duration(timedelta(hours=3, minutes=4)) == "3 h 04 min"
    assert format_duration(timedelta(days=3, hours=5)) == "3 d 5 h"


def test_timeline_permissions_and_unknown_ids(client, django_user_model, superuser, make_task):
    task = make_task()
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    client.force_login(nobody)
    assert client.get(reverse("admin:tasks_task_timeline", args=[task.pk])).status_code == 403
    client.force_login(superuser)
    assert client.get(reverse("admin:tasks_task_timeline", args=["0" * 32])).status_code == 404
    assert client.get(reverse("admin:tasks_task_timeline", args=["nope"])).status_code == 404


# --- Read-only admins and preferences.


def test_history_is_read_only_for_everyone_including_superusers(client, superuser, make_task):
    task = make_task()
    row = TaskHistory.objects.filter(task=task).get()
    client.force_login(superuser)
    listing = client.get(reverse("admin:tasks_taskhistory_changelist") + f"?task__id__exact={task.pk}")
    assert listing.status_code == 200
    assert [r.pk for r in listing.context["cl"].result_list] == [row.pk]
    searched = client.get(reverse("admin:tasks_taskhistory_changelist") + f"?q={str(task.pk)[:8]}")
    assert [r.pk for r in searched.context["cl"].result_list] == [row.pk]
    assert listing.context["action_form"] is None  # no actions at all, delete_selected included
    assert client.get(reverse("admin:tasks_taskhistory_add")).status_code == 403
    change = client.get(reverse("admin:tasks_taskhistory_change", args=[row.pk]))
    assert change.status_code == 200 and 'name="reason"' not in change.content.decode()
    assert client.post(reverse("admin:tasks_taskhistory_change", args=[row.pk]), {"reason": "x"}).status_code == 403
    assert client.post(reverse("admin:tasks_taskhistory_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    assert TaskHistory.objects.filter(pk=row.pk, reason=row.reason).exists()


def test_cli_sessions_and_commands_are_read_only(client, superuser):
    session = CLISession.objects.create(name="dev box", provider="openai")
    command = CLISessionCommand.objects.create(session=session, command="crux run --all", exit_code=0)
    client.force_login(superuser)
    for model, obj in (("clisession", session), ("clisessioncommand", command)):
        assert client.get(reverse(f"admin:tasks_{model}_changelist")).status_code == 200
        assert client.get(reverse(f"admin:tasks_{model}_change", args=[obj.pk])).status_code == 200
        assert client.get(reverse(f"admin:tasks_{model}_add")).status_code == 403
        assert client.post(reverse(f"admin:tasks_{model}_change", args=[obj.pk]), {}).status_code == 403
        assert client.post(reverse(f"admin:tasks_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert "crux run --all" in client.get(reverse("admin:tasks_clisession_change", args=[session.pk])).content.decode()


def test_user_preferences_are_editable(client, superuser, user):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:tasks_userpreference_add"),
        {
            "user": user.pk,
            "default_provider": "anthropic",
            "default_model": "m1",
            "default_role": "",
            "preferences": "{}",
        },
    )
    assert response.status_code == 302
    pref = UserPreference.objects.get(user=user)
    assert pref.default_provider == "anthropic"


# --- The dashboard.


def test_dashboard_shows_states_deletions_mirror_and_chart(
    client, superuser, make_task, django_capture_on_commit_callbacks
):
    tasks = [make_task(title=f"dash {i}") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):  # the mirror follows each commit
        move(tasks[0], "queued", "running", "completed")
        services.soft_delete(tasks[1].pk, user=superuser, channel=Channel.ADMIN, reason="dash")
    client.force_login(superuser)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    html = response.content.decode()
    dash = re.search(r'<div class="crux-dash".*?</svg>', html, re.S).group(0)
    assert 'data-state="completed"' in dash
    assert re.search(r'id="crux-deleted-24h">1<', dash)
    states = {s["state"]: s["count"] for s in response.context["dash"]["states"]}
    assert states["completed"] == 1 and states["pending"] == 2
    mirror = response.context["dash"]["mirror"]
    assert (mirror["sampled"], mirror["consistent"], mirror["status"]) == (3, 3, "ok")
    assert "100.0%" in dash
    chart = response.context["dash"]["chart"]
    assert chart["total_created"] == 3 and chart["total_finished"] == 1
    assert len(chart["bars"]) == 24
    assert "<rect" in dash and "http" not in dash.split("<svg", 1)[1].replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_dashboard_mirror_sample_reports_missing_entries_and_a_dead_redis(client, superuser, make_task, private_redis):
    from crux import dashboard

    make_task(title="mirrored")
    assert dashboard.mirror_sample(dashboard.MIRROR_SAMPLE_SIZE)["status"] == "ok"
    private_redis.client.flushall()
    sample = dashboard.mirror_sample(dashboard.MIRROR_SAMPLE_SIZE)
    assert (sample["status"], sample["missing"]) == ("drift", 1)
    private_redis.kill()
    assert dashboard.mirror_sample(dashboard.MIRROR_SAMPLE_SIZE)["status"] == "unreachable"
    client.force_login(superuser)
    html = client.get(reverse("admin:index")).content.decode()
    assert "Redis unreachable" in html


def test_dashboard_is_hidden_from_staff_who_cannot_see_tasks(client, django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    client.force_login(nobody)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "crux-dashboard" not in response.content.decode()


def test_app_index_has_no_dashboard(client, superuser):
    client.force_login(superuser)
    html = client.get(reverse("admin:app_list", args=["tasks"])).content.decode()
    assert "crux-dashboard" not in html


def test_outputs_tail_is_capped(client, superuser, make_task, monkeypatch):
    from tasks.admin import task_page

    monkeypatch.setattr(task_page, "TAIL_LINES", 2)
    task = make_task()
    for i in range(4):
        services.add_output(task.pk, output_type="log", content=f"line {i}")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert not any(f.opts.model is TaskOutput for f in response.context["inline_admin_formsets"])
    assert [output.content for output in response.context["live"].tail.lines] == ["line 2", "line 3"]
