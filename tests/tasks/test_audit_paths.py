"""Every way of changing a task either leaves exactly one history row or is refused."""

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tasks import services
from tasks.audit import Channel, audited, same_json, to_jsonable
from tasks.exceptions import HardDeleteRefused, MissingAuditContext, UntrackedWrite
from tasks.models import Task, TaskHistory
from tasks.selectors import verify_audit_chains
from tasks.services.base import write_task
from tasks.states import TaskState

pytestmark = pytest.mark.django_db


def rows(task):
    return list(TaskHistory.objects.filter(task=task).order_by("seq"))


def test_create_writes_first_row_with_actor_channel_reason(user, make_task):
    task = make_task(title="first", role="backend", metadata={"k": [1, 2]})
    (row,) = rows(task)
    assert (row.seq, row.event, row.state_from, row.state_to) == (1, "created", "", "pending")
    assert (row.actor, row.actor_user_id, row.channel, row.reason) == ("alice", user.pk, "api", "created")
    assert row.details["changes"]["title"] == "first"
    assert row.details["changes"]["metadata"] == {"k": [1, 2]}
    task.refresh_from_db()
    assert (task.history_count, task.history_head) == (1, row.hash)


def test_a_state_change_is_written_once_in_its_columns_not_again_in_the_details(user, make_task):
    task = make_task(title="states")
    services.transition(task.pk, "queued", actor="system:test", channel=Channel.API, reason="go")
    services.claim(task.pk, worker_id="w:1")
    services.finish_attempt(task.pk, attempt=1, worker_id="w:1", result={"ok": True})
    history = rows(task)
    assert [(r.state_from, r.state_to) for r in history] == [
        ("", "pending"),
        ("pending", "queued"),
        ("queued", "running"),
        ("running", "completed"),
    ]
    assert all("state" not in r.details["changes"] for r in history), [r.details for r in history]
    assert history[2].details["changes"]["worker_id"] == ["", "w:1"], "the other changes are kept"
    assert history[3].details["changes"]["completed_at"][0] is None


def test_edit_soft_delete_restore_each_write_one_row(user, make_task):
    task = make_task(title="old")
    services.update_task(task.pk, actor=user, channel=Channel.API, reason="typo", title="new", description="d")
    services.soft_delete(task.pk, user=user, channel=Channel.API, reason="duplicate")
    services.restore(task.pk, user=user, channel=Channel.API, reason="not a duplicate")
    history = rows(task)
    assert [r.event for r in history] == ["created", "edit", "soft_delete", "restore"]
    assert history[1].details["changes"] == {"title": ["old", "new"], "description": ["", "d"]}
    assert history[2].reason == "duplicate" and history[2].details["changes"]["deleted_by"] == [None, user.pk]
    task.refresh_from_db()
    assert task.deleted_at is None and task.history_count == 4


def test_save_without_audit_context_is_refused_and_writes_nothing(make_task):
    task = make_task(title="before")
    task.title = "sneaky"
    with pytest.raises(MissingAuditContext):
        task.save()
    task.refresh_from_db()
    assert task.title == "before" and len(rows(task)) == 1


def test_save_with_context_writes_exactly_one_row(make_task):
    task = make_task()
    task.title = "renamed in a shell"
    with audited("ops:carol", channel=Channel.SHELL, reason="manual fix"):
        task.save()
        task.save()  # no change the second time: no row
    assert [(r.event, r.actor, r.channel) for r in rows(task)][1:] == [("edit", "ops:carol", "shell")]


def test_direct_save_of_illegal_state_is_refused(make_task):
    task = make_task()
    task.state = "completed"
    with audited("ops:carol", channel=Channel.SHELL, reason="force"), pytest.raises(Exception, match="illegal"):
        task.save()
    task.refresh_from_db()
    assert task.state == "pending" and len(rows(task)) == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"retries": 1}, {"retries": True}),
        ({"retries": 1}, {"retries": 1.0}),
        ({"steps": [0, {"done": False}]}, {"steps": [0, {"done": 0}]}),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": None}),
    ],
    ids=["int-to-bool", "int-to-float", "nested", "key-added"],
)
@pytest.mark.parametrize("read", ["locked", "unlocked"])
def test_a_change_pythons_equality_hides_is_saved_and_recorded(user, make_task, before, after, read):
    """A JSON value equal by ``==`` but not the same JSON (1 and True, 1 and 1.0) is a change: it is written and the
    history records it, by a save of a task read under its lock or without it (a compare-and-set, its changes
    alone written)."""
    task = make_task(metadata=before)
    if read == "locked":
        services.update_task(task.pk, actor=user, channel=Channel.API, reason="retype", metadata=after)
    else:

        def retype(task: Task) -> None:
            task.metadata = after
            with audited(user, channel=Channel.API, reason="retype"):
                task.save()

        write_task(task.pk, retype)
    assert rows(task)[-1].details["changes"] == {"metadata": [before, after]}
    stored = Task.objects.get(pk=task.pk)
    assert to_jsonable(stored.metadata) == after and same_json(stored.metadata, after)
    assert stored.history_count == 2


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"k": [1, "x", None, 2.5, False]}, {"k": [1, "x", None, 2.5, False]}, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),  # the same object in JSON: key order is not a change
        (1, True, False),
        (1, 1.0, False),
        ([1, 2], [1, 2, 3], False),
        ({"a": {"b": 1}}, {"a": {"b": True}}, False),
        (float("nan"), float("nan"), False),
        (TaskState.QUEUED, "queued", True),  # a str enum is written as its text
        ({"s": TaskState.QUEUED}, {"s": "queued"}, True),  # at any level
        (timezone.now().replace(microsecond=0),) * 2 + (False,),  # not JSON: left to the conversion
    ],
)
def test_same_json_is_true_only_where_the_json_forms_are_certainly_equal(a, b, same):
    assert same_json(a, b) is same
    if same:
        assert to_jsonable(a) == to_jsonable(b)


def test_stale_instance_still_chains_correctly(user, make_task):
    task = make_task()
    stale = Task.objects.get(pk=task.pk)
    services.update_task(task.pk, actor=user, channel=Channel.API, reason="r1", title="one")
    stale.description = "from a stale copy"
    with audited(user, channel=Channel.API, reason="r2"):
        stale.save(update_fields=["description"])
    history = rows(task)
    assert [r.seq for r in history] == [1, 2, 3]
    assert not [p for p in verify_audit_chains() if p.subject == f"task {task.pk}"], "chained to the row before it"
    assert history[2].details["changes"] == {"description": ["", "from a stale copy"]}


def test_untracked_live_fields_write_no_row(make_task):
    task = make_task()
    assert Task.objects.filter(pk=task.pk).update(progress=0.5, current_phase="thinking") == 1
    task.refresh_from_db()
    assert task.progress == 0.5 and len(rows(task)) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"state": "completed"}, {"title": "x"}, {"owner_id": None}, {"deleted_at": timezone.now()}],
    ids=["state", "title", "owner_id", "deleted_at"],
)
def test_queryset_update_of_tracked_fields_is_refused(make_task, kwargs):
    task = make_task()
    with pytest.raises(UntrackedWrite):
        Task.objects.filter(pk=task.pk).update(**kwargs)
    with pytest.raises(UntrackedWrite):
        Task.objects.filter(pk=task.pk).update(progress=0.1, **kwargs)
    task.refresh_from_db()
    assert task.state == "pending" and task.progress == 0.0 and len(rows(task)) == 1


def test_bulk_update_bulk_create_and_deletes_are_refused(user, make_task):
    task = make_task()
    task.state = "queued"
    with pytest.raises(UntrackedWrite):
        Task.objects.bulk_update([task], ["state"])
    with pytest.raises(UntrackedWrite):
        Task.objects.bulk_create([Task(title="bulk", owner=user)])
    with pytest.raises(HardDeleteRefused):
        Task.objects.filter(pk=task.pk).delete()
    with pytest.raises(HardDeleteRefused):
        task.delete()
    assert Task.objects.count() == 1
    assert Task.objects.get().state == "pending" and len(rows(task)) == 1


def test_deleting_the_owner_is_refused(user, make_task):
    from django.db.models import ProtectedError

    make_task()
    with pytest.raises(ProtectedError):
        user.delete()
    assert Task.objects.count() == 1


def test_admin_edit_writes_one_row_naming_the_user(client, django_user_model, make_task):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    task = make_task(title="from api")
    client.force_login(admin_user)
    url = reverse("admin:tasks_task_change", args=[task.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(title="edited in admin", change_reason="clarify title", acceptance_criteria="{}", metadata="{}")
    for prefix in ("metrics", "outputs", "history"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    last = rows(task)[-1]
    assert (last.event, last.actor, last.actor_user_id, last.channel, last.reason) == (
        "edit",
        "root",
        admin_user.pk,
        "admin",
        "clarify title",
    )
    assert last.details["changes"] == {"title": ["from api", "edited in admin"]}
    assert len(rows(task)) == 2


def test_admin_cannot_delete_tasks_or_history(admin_client, make_task):
    task = make_task()
    assert admin_client.get(reverse("admin:tasks_task_delete", args=[task.pk])).status_code == 403
    changelist = admin_client.get(reverse("admin:tasks_task_changelist"))
    assert "delete_selected" not in changelist.context["cl"].model_admin.get_actions(changelist.wsgi_request)
    row = rows(task)[0]
    assert admin_client.get(reverse("admin:tasks_taskhistory_delete", args=[row.pk])).status_code == 403
    assert (
        admin_client.post(reverse("admin:tasks_taskhistory_change", args=[row.pk]), {"reason": "x"}).status_code == 403
    )
    assert Task.objects.filter(pk=task.pk).exists() and len(rows(task)) == 1


def test_history_orm_writes_are_refused(make_task):
    from tasks.exceptions import AppendOnlyViolation

    task = make_task()
    row = rows(task)[0]
    row.reason = "rewritten"
    with pytest.raises(AppendOnlyViolation):
        row.save()
    with pytest.raises(AppendOnlyViolation):
        TaskHistory.objects.filter(pk=row.pk).update(reason="rewritten")
    with pytest.raises(AppendOnlyViolation):
        TaskHistory.objects.filter(pk=row.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        row.delete()
    assert TaskHistory.objects.get(pk=row.pk).reason == "created"


def test_every_row_is_written_in_the_changes_transaction(make_task):
    """A failure after the history insert rolls back the task change too."""
    from django.db import transaction

    task = make_task()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.update_task(task.pk, actor="system:test", channel=Channel.SYSTEM, reason="r", title="rolled back")
        assert len(rows(task)) == 2
        raise RuntimeError("crash before commit")
    task.refresh_from_db()
    assert task.title == "a task" and len(rows(task)) == 1
    assert connection.in_atomic_block  # still inside the test's transaction, nothing leaked
