"""Task endpoints end to end: submit (idempotency, validation, size limit), read, status from Redis, history,
outputs, cancel, delete and restore (safe delete), recover, the legacy paths and throttling."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from persistence import mirror
from tasks.models import IdempotencyKey, Task, TaskHistory, TaskOutput
from tests.api_support import client_for, grant, snapshot

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db


# --- Submit.


def test_submit_creates_a_queued_task_with_its_history(api: Any, user: Any) -> None:
    body = {"title": "build", "role": "backend", "provider": "claude", "payload": {"n": 1}, "metadata": {"k": "v"}}
    response = api.post("/api/tasks/", body, format="json")
    assert response.status_code == 201, response.data
    task = Task.objects.get(pk=response.data["id"])
    assert response["Location"].endswith(f"/api/tasks/{task.pk}")
    assert (task.state, task.owner, task.role, task.request_payload, task.metadata) == (
        "queued",
        user,
        "backend",
        {"n": 1},
        {"k": "v"},
    )
    first = task.history.get()
    assert (first.event, first.state_to, first.actor, first.channel) == ("created", "queued", "alice", "api")
    assert response.data["owner"] == "alice" and response.data["payload"] == {"n": 1}


def test_submit_publishes_to_celery_only_after_commit(api: Any, django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post("/api/tasks/", {"title": "t"}, format="json")
    assert response.status_code == 201
    published = [c for c in callbacks if getattr(c, "func", None) and c.func.__module__ == "tasks.dispatch"]
    assert [str(item.task_id) for c in published for item in c.args[0]] == [response.data["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "t", "handler": "rm -rf"}, "handler"),
        ({"title": "t", "max_attempts": 0}, "max_attempts"),
        ({"title": "t", "max_attempts": "many"}, "max_attempts"),
        ({"title": "t", "payload": ["not", "a", "dict"]}, "payload"),
        ({"title": "t", "metadata": "text"}, "metadata"),
        ({"title": "t", "full_access": "perhaps"}, "full_access"),
        ({"title": "t", "full_access": "true"}, "full_access"),
        ({"title": 5}, "title"),
        ({"title": "t", "max_attempts": "3"}, "max_attempts"),
        ({"title": "t", "max_attempts": 2.5}, "max_attempts"),
        ({"title": "t", "max_attempts": True}, "max_attempts"),
        ({"title": "t", "state": "completed"}, "state"),
        ({"title": "t", "owner": "bob"}, "owner"),
        ({"title": "t", "deleted_at": "2024-01-01T00:00:00Z"}, "deleted_at"),
        ({"title": "t", "history_count": 0}, "history_count"),
        ({"title": "t", "attempt_count": 9}, "attempt_count"),
        ({"title": "t", "surprise": 1}, "surprise"),
    ],
)
def test_bad_submissions_answer_400_naming_the_field_and_write_nothing(body: dict, field: str, api: Any) -> None:
    response = api.post("/api/tasks/", body, format="json")
    assert response.status_code == 400, response.data
    assert field in response.data
    assert Task.objects.count() == 0 and TaskHistory.objects.count() == 0


def test_read_only_fields_are_named_read_only(api: Any) -> None:
    response = api.post("/api/tasks/", {"title": "t", "state": "completed", "surprise": 1}, format="json")
    assert response.data["state"] == ["This field is read-only: the server sets it."]
    assert response.data["surprise"] == ["Unknown field."]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "null"])
def test_malformed_bodies_are_400(raw: str, api: Any) -> None:
    response = api.post("/api/tasks/", raw, content_type="application/json")
    assert response.status_code == 400
    assert Task.objects.count() == 0


def test_non_json_bodies_are_415(api: Any) -> None:
    response = api.post("/api/tasks/", "title=t", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert Task.objects.count() == 0


def test_submit_payload_size_limit(api: Any, settings: Any) -> None:
    settings.API_SUBMIT_MAX_BYTES = 1000
    small = {"title": "t", "payload": {"blob": "x" * 800}}
    assert api.post("/api/tasks/", small, format="json").status_code == 201
    big = {"title": "t", "payload": {"blob": "x" * 1000}}
    response = api.post("/api/tasks/", big, format="json")
    assert response.status_code == 413
    assert "API_SUBMIT_MAX_BYTES" in response.json()["detail"]
    assert Task.objects.count() == 1


def test_output_size_limit(api: Any, task_in: Any, settings: Any) -> None:
    task = task_in("running")
    settings.API_SUBMIT_MAX_BYTES = 500
    response = api.post(f"/api/tasks/outputs/{task.pk}", {"output_type": "log", "content": "y" * 600}, format="json")
    assert response.status_code == 413
    assert TaskOutput.objects.count() == 0


# --- Idempotency-Key.


def test_a_retry_with_the_same_key_returns_the_same_task(api: Any) -> None:
    body = {"title": "once", "payload": {"x": 1}}
    first = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again["Idempotent-Replayed"] == "true"
    assert first.data["id"] == again.data["id"]
    assert Task.objects.count() == 1 and TaskHistory.objects.count() == 1


def test_same_key_with_another_body_is_refused(api: Any) -> None:
    api.post("/api/tasks/", {"title": "one"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = api.post("/api/tasks/", {"title": "two"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 409
    assert "already used for a different request" in response.data["Idempotency-Key"][0]
    assert Task.objects.count() == 1


def test_keys_are_scoped_per_user_and_absent_keys_never_dedupe(api: Any, other_user: Any) -> None:
    body = {"title": "same"}
    a = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = client_for(other_user).post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert a.status_code == b.status_code == 201 and a.data["id"] != b.data["id"]
    api.post("/api/tasks/", body, format="json")
    api.post("/api/tasks/", body, format="json")
    assert Task.objects.count() == 4


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_invalid_idempotency_keys_are_400(key: str, api: Any) -> None:
    response = api.post("/api/tasks/", {"title": "t"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.data
    assert Task.objects.count() == 0


def test_the_legacy_solve_honours_idempotency_keys(api: Any) -> None:
    body = {"request": {"q": "2+2"}, "mode": "enhanced"}
    first = api.post("/api/v1/solve", body, format="json", HTTP_IDEMPOTENCY_KEY="solve-1")
    again = api.post("/api/v1/solve", body, format="json", HTTP_IDEMPOTENCY_KEY="solve-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.data["job_id"] == again.data["job_id"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_task(live_db: Any, user: Any) -> None:
    """Eight simultaneous requests with the same key: one task, eight answers naming it."""
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        try:
            client = client_for(user)
            barrier.wait()
            response = client.post("/api/tasks/", {"title": "race"}, format="json", HTTP_IDEMPOTENCY_KEY="race")
            results.append((response.status_code, response.data.get("id")))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(code for code, _ in results) == [200] * 7 + [201]
    assert len({task_id for _, task_id in results}) == 1
    assert Task.objects.count() == 1 and IdempotencyKey.objects.count() == 1


# --- Reads.


def test_detail_and_history(api: Any, task_in: Any) -> None:
    task = task_in("completed")
    detail = api.get(f"/api/tasks/{task.pk}")
    assert detail.data["state"] == "completed" and detail.data["history_count"] == 4
    history = api.get(f"/api/tasks/history/{task.pk}")
    assert history.status_code == 200
    rows = history.data["results"]
    assert [(r["seq"], r["state_to"]) for r in rows] == [
        (1, "pending"),
        (2, "queued"),
        (3, "running"),
        (4, "completed"),
    ]
    assert all(rows[i]["prev_hash"] == rows[i - 1]["hash"] for i in range(1, len(rows)))


def test_users_are_named_in_lists_details_and_answers(
    api: Any, staff_perm: Any, other_user: Any, task_in: Any, user: Any
) -> None:
    """``owner`` and ``deleted_by`` are usernames (null when unset) wherever a task is shown. A list page reads
    them as join columns: its statements do not grow with its tasks (no user read per task)."""
    staff = client_for(staff_perm)
    mine, theirs = task_in("queued"), task_in("queued", owner=other_user)
    gone = task_in("completed", deleted=True)
    by_id = {t.pk: t for t in (mine, theirs, gone)}
    expected = {
        str(pk): (task.owner.username, task.deleted_by.username if task.deleted_by else None)
        for pk, task in by_id.items()
    }
    assert expected[str(gone.pk)] == (user.username, user.username) and expected[str(mine.pk)][1] is None

    def page(**filters: str) -> tuple[dict[str, tuple[str, str | None]], int]:
        with CaptureQueriesContext(connection) as queries:
            response = staff.get("/api/tasks/persistent", {"include_deleted": "true", **filters})
        assert response.status_code == 200, response.content
        names = {t["id"]: (t["owner"], t["deleted_by"]) for t in response.data["results"]}
        return names, len(queries.captured_queries)

    page()  # the client's first request also reads its token
    one, statements_for_one = page(states="completed")
    every, statements_for_every = page()
    assert every == expected and list(one) == [str(gone.pk)]
    assert statements_for_every == statements_for_one
    for task in by_id.values():
        detail = staff.get(f"/api/tasks/{task.pk}").data
        assert (detail["owner"], detail["deleted_by"]) == expected[str(task.pk)]
    answer = api.post("/api/tasks/", {"title": "named", "handler": "echo"}, format="json")
    assert answer.status_code == 201, answer.content
    assert (answer.data["owner"], answer.data["deleted_by"]) == (user.username, None)


def test_unknown_task_is_404(api: Any) -> None:
    response = api.get("/api/tasks/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and response.data == {"detail": "Not found."}


def test_status_is_served_from_the_redis_mirror(api: Any, task_in: Any, settings: Any) -> None:
    task = task_in("running")
    conn = redis.Redis.from_url(settings.REDIS_URL)
    key = mirror.task_key(task.pk)
    assert conn.get(key) is None  # the fixture's after-commit mirror writes never ran
    first = api.get(f"/api/tasks/{task.pk}/status")
    assert first.status_code == 200 and first.data["state"] == "running"
    stored = json.loads(conn.get(key))  # the SQL fallback re-populated the mirror
    assert stored["state"] == "running"
    stored["current_phase"] = "seen in redis"
    conn.set(key, json.dumps(stored))
    assert api.get(f"/api/tasks/{task.pk}/status").data["current_phase"] == "seen in redis"


def test_status_of_a_deleted_task_is_hidden_from_its_owner(api: Any, task_in: Any, staff: Any) -> None:
    task = task_in("completed", deleted=True)
    assert api.get(f"/api/tasks/{task.pk}/status").status_code == 404
    assert client_for(staff).get(f"/api/tasks/{task.pk}/status").data["deleted_at"] is not None


def test_status_survives_redis_being_down(api: Any, task_in: Any, private_redis: Any) -> None:
    task = task_in("queued")
    private_redis.kill()
    response = api.get(f"/api/tasks/{task.pk}/status")
    assert response.status_code == 200 and response.data["state"] == "queued"


def test_reads_survive_redis_being_down_with_throttles_failing_open(
    api: Any, task_in: Any, settings: Any, private_redis: Any
) -> None:
    throttle = dict(settings.CACHES["throttle"], LOCATION=private_redis.url)
    settings.CACHES = {**settings.CACHES, "throttle": throttle}
    private_redis.kill()
    task_in("queued")
    assert api.get("/api/tasks/").status_code == 200
    assert api.post("/api/tasks/", {"title": "t"}, format="json").status_code == 201


# --- Outputs.


def test_outputs_add_and_list(api: Any, task_in: Any) -> None:
    task = task_in("running")
    body = {"output_type": "artifact", "content": "diff", "file_path": "a.patch", "file_size": 4}
    created = api.post(f"/api/tasks/outputs/{task.pk}", body, format="json")
    assert created.status_code == 201
    listed = api.get(f"/api/tasks/outputs/{task.pk}")
    assert [(o["output_type"], o["file_path"]) for o in listed.data["results"]] == [("artifact", "a.patch")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "x"}, "output_type"),
        ({"output_type": "video"}, "output_type"),
        ({"output_type": "log", "file_size": -1}, "file_size"),
        ({"output_type": "log", "task": "other"}, "task"),
    ],
)
def test_bad_outputs_are_400(body: dict, field: str, api: Any, task_in: Any) -> None:
    task = task_in("running")
    response = api.post(f"/api/tasks/outputs/{task.pk}", body, format="json")
    assert response.status_code == 400 and field in response.data
    assert TaskOutput.objects.count() == 0


def test_outputs_cannot_be_added_to_a_deleted_task(staff_perm: Any, task_in: Any) -> None:
    task = task_in("completed", deleted=True)
    response = client_for(staff_perm).post(f"/api/tasks/outputs/{task.pk}", {"output_type": "log"}, format="json")
    assert response.status_code == 400 and "restore it" in response.data["task_id"][0]
    assert TaskOutput.objects.count() == 0


# --- Cancel.


def test_cancel_records_who_and_why(api: Any, task_in: Any) -> None:
    task = task_in("running")
    response = api.post(f"/api/tasks/{task.pk}/cancel?confirm=true", {"reason": "not needed"}, format="json")
    assert response.status_code == 200 and response.data["state"] == "cancelled"
    row = Task.objects.get(pk=task.pk).history.order_by("-seq").first()
    assert (row.state_to, row.actor, row.channel, row.reason) == ("cancelled", "alice", "api", "not needed")


def test_cancel_without_confirmation_explains_how(api: Any, task_in: Any) -> None:
    task = task_in("running")
    before = snapshot(task)
    response = api.post(f"/api/tasks/{task.pk}/cancel?confirm=false")
    assert response.status_code == 400
    assert "confirm=true" in response.data["confirm"][0]
    assert snapshot(task) == before


def test_cancel_of_a_finished_task_is_409(api: Any, task_in: Any) -> None:
    task = task_in("completed")
    response = api.post(f"/api/tasks/{task.pk}/cancel?confirm=true")
    assert response.status_code == 409 and "illegal transition" in response.data["state"][0]


# --- Delete and restore.


@pytest.fixture
def deleter(user: Any) -> Any:
    """The owner, allowed to soft-delete (but not to see the trash or restore)."""
    return client_for(grant(user, "soft_delete_task"))


def test_delete_without_confirm_says_how_to_confirm(deleter: Any, task_in: Any) -> None:
    task = task_in("completed")
    before = snapshot(task)
    response = deleter.delete(f"/api/tasks/{task.pk}")
    assert response.status_code == 400
    assert "confirm=true" in response.data["confirm"][0] and "reason" in response.data
    assert snapshot(task) == before


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("confirm=maybe", {"reason": "x"}),
        ("confirm=1", {"reason": "x"}),
        ("confirm=yes", {"reason": "x"}),
        ("confirm=TRUE", {"reason": "x"}),
        ("confirm=", {"reason": "x"}),
        ("confirm=true", None),
        ("confirm=true", {"reason": ""}),
        ("confirm=true&reason=x", {"reason": "x"}),
    ],
)
def test_delete_with_bad_confirmation_or_no_reason_is_400(query: str, body: Any, deleter: Any, task_in: Any) -> None:
    task = task_in("completed")
    before = snapshot(task)
    response = deleter.delete(f"/api/tasks/{task.pk}?{query}", body, format="json")
    assert response.status_code == 400
    assert snapshot(task) == before


def test_safe_delete_lifecycle(deleter: Any, staff_perm: Any, user: Any, task_in: Any) -> None:
    task = task_in("completed")
    keep = task_in("completed", title="kept")
    response = deleter.delete(f"/api/tasks/{task.pk}?confirm=true", {"reason": "duplicate of another"}, format="json")
    assert response.status_code == 200 and response.data["is_deleted"] is True

    stored = Task.objects.get(pk=task.pk)
    assert (stored.deleted_by, stored.delete_reason) == (user, "duplicate of another")
    assert stored.deleted_at is not None and stored.state == "completed"
    row = stored.history.order_by("-seq").first()
    assert (row.event, row.actor, row.channel, row.reason) == ("soft_delete", "alice", "api", "duplicate of another")

    # Gone from default lists and from the owner's reads; listed with include_deleted for the trash keeper.
    assert [t["id"] for t in deleter.get("/api/tasks/").data["results"]] == [str(keep.pk)]
    assert deleter.get(f"/api/tasks/{task.pk}").status_code == 404
    assert deleter.delete(f"/api/tasks/{task.pk}?confirm=true", {"reason": "again"}, format="json").status_code == 404
    trash = client_for(staff_perm)
    assert [t["id"] for t in trash.get("/api/tasks/").data["results"]] == [str(keep.pk)]
    listed = trash.get("/api/tasks/", {"include_deleted": "true"}).data["results"]
    assert {t["id"] for t in listed} == {str(task.pk), str(keep.pk)}

    # Deleting twice is refused; restore brings it back with a history row.
    assert trash.delete(f"/api/tasks/{task.pk}?confirm=true", {"reason": "again"}, format="json").status_code == 400
    restored = trash.post(f"/api/tasks/{task.pk}/restore", {"reason": "needed after all"}, format="json")
    assert restored.status_code == 200 and restored.data["is_deleted"] is False
    row = Task.objects.get(pk=task.pk).history.order_by("-seq").first()
    assert (row.event, row.actor, row.reason) == ("restore", "staff-perm", "needed after all")
    assert deleter.get(f"/api/tasks/{task.pk}").status_code == 200
    assert trash.post(f"/api/tasks/{task.pk}/restore").status_code == 400  # not deleted any more


def test_a_deletion_spike_trips_the_breaker(deleter: Any, task_in: Any, settings: Any) -> None:
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 1
    first, second = task_in("completed"), task_in("completed")
    assert deleter.delete(f"/api/tasks/{first.pk}?confirm=true", {"reason": "one"}, format="json").status_code == 200
    before = snapshot(second)
    response = deleter.delete(f"/api/tasks/{second.pk}?confirm=true", {"reason": "two"}, format="json")
    assert response.status_code == 409
    assert "deletions are suspended" in response.data["detail"]
    assert snapshot(second) == before


def test_restore_rejects_unknown_body_fields(staff_perm: Any, task_in: Any) -> None:
    task = task_in("completed", deleted=True)
    response = client_for(staff_perm).post(
        f"/api/tasks/{task.pk}/restore", {"reason": "x", "state": "queued"}, format="json"
    )
    assert response.status_code == 400 and "state" in response.data
    assert Task.objects.get(pk=task.pk).is_deleted


# --- Recover.


@pytest.fixture
def recoverer(staff_perm: Any) -> Any:
    return client_for(staff_perm)


@pytest.mark.parametrize("state", ["failed", "interrupted", "cancelled"])
def test_recover_requeues_failed_and_interrupted_tasks(
    state: str, recoverer: Any, task_in: Any, django_capture_on_commit_callbacks: Any
) -> None:
    task = task_in(state)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = recoverer.post(f"/api/tasks/{task.pk}/recover", {"reason": "retry after fix"}, format="json")
    assert response.status_code == 200
    assert response.data["action"] == "requeued" and response.data["task"]["state"] == "queued"
    row = Task.objects.get(pk=task.pk).history.order_by("-seq").first()
    assert (row.state_from, row.state_to, row.actor, row.channel, row.reason) == (
        state,
        "queued",
        "staff-perm",
        "api",
        "retry after fix",
    )
    assert any(getattr(c, "func", None) and c.func.__module__ == "tasks.dispatch" for c in callbacks)


@pytest.mark.parametrize("state", ["pending", "queued", "running", "completed"])
def test_recover_remirrors_other_states(state: str, recoverer: Any, task_in: Any, settings: Any) -> None:
    task = task_in(state)
    conn = redis.Redis.from_url(settings.REDIS_URL)
    key = mirror.task_key(task.pk)
    conn.set(key, json.dumps({"id": str(task.pk), "state": "garbage", "version": 0}))
    before = snapshot(task)
    response = recoverer.post(f"/api/tasks/{task.pk}/recover")
    assert response.status_code == 200 and response.data["action"] == "remirrored"
    assert json.loads(conn.get(key)) == mirror.snapshot_of(Task.objects.get(pk=task.pk))
    assert snapshot(task) == before  # SQL unchanged, no history row


def test_recover_with_redis_down_is_503_and_changes_nothing(recoverer: Any, task_in: Any, private_redis: Any) -> None:
    task = task_in("completed")
    before = snapshot(task)
    private_redis.kill()
    response = recoverer.post(f"/api/tasks/{task.pk}/recover")
    assert response.status_code == 503 and "Redis" in response.data["detail"]
    assert snapshot(task) == before


def test_recover_of_a_deleted_task_asks_for_a_restore(recoverer: Any, task_in: Any) -> None:
    task = task_in("failed", deleted=True)
    response = recoverer.post(f"/api/tasks/{task.pk}/recover")
    assert response.status_code == 400 and "restore it" in response.data["task_id"][0]
    assert Task.objects.get(pk=task.pk).state == "failed"


# --- Legacy paths of the system Crux replaced.


def test_legacy_solve_read_and_cancel(api: Any) -> None:
    created = api.post("/api/v1/solve", {"request": {"question": "x"}, "mode": "enhanced"}, format="json")
    assert created.status_code == 201
    job_id = created.data["job_id"]
    task = Task.objects.get(pk=job_id)
    assert (task.handler, task.request_payload, task.metadata) == (
        "agent_demo",
        {"question": "x"},
        {"mode": "enhanced"},
    )

    job = api.get(f"/api/v1/jobs/{job_id}").data
    assert (job["status"], job["mode"], job["request"]) == ("queued", "enhanced", {"question": "x"})

    refused = api.delete(f"/api/v1/jobs/{job_id}")
    assert refused.status_code == 400 and "confirm=true" in refused.data["confirm"][0]
    assert Task.objects.get(pk=job_id).state == "queued"

    cancelled = api.delete(f"/api/v1/jobs/{job_id}?confirm=true", {"reason": "user asked"}, format="json")
    assert cancelled.status_code == 200 and cancelled.data["status"] == "cancelled"
    task = Task.objects.get(pk=job_id)
    assert task.deleted_at is None  # the legacy DELETE cancels; it never deletes
    assert task.history.order_by("-seq").first().reason == "user asked"


def test_legacy_solve_rejects_bad_input(api: Any) -> None:
    response = api.post("/api/v1/solve", {"request": "text", "mode": "turbo"}, format="json")
    assert response.status_code == 400 and {"request", "mode"} <= set(response.data)
    assert Task.objects.count() == 0


# --- Throttling.


def test_submissions_are_throttled(api: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"submit": "2/minute", "read": "1000/minute"},
    }
    codes = [api.post("/api/tasks/", {"title": f"t{i}"}, format="json").status_code for i in range(3)]
    assert codes == [201, 201, 429]
    assert int(api.post("/api/v1/solve", {"request": {}}, format="json")["Retry-After"]) > 0
    assert Task.objects.count() == 2
    assert api.get("/api/tasks/").status_code == 200  # reads have their own budget


def test_reads_are_throttled_per_user(api: Any, other_user: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"submit": "1000/minute", "read": "3/minute"},
    }
    codes = [api.get("/api/tasks/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert client_for(other_user).get("/api/tasks/").status_code == 200
    assert api.post("/api/tasks/", {"title": "t"}, format="json").status_code == 201
