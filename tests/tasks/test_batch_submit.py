"""POST /api/tasks/batch and services.submit_batch: many tasks in one transaction, all or none, each with its
history row, idempotent per item, published after commit in one round trip, and run by a real worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from persistence import mirror
from tasks import services
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.models import IdempotencyKey, Task, TaskHistory
from tasks.selectors.history import verify_audit_chains
from tasks.services.submission import checked_submission
from tasks.states import TaskState
from tests.api_support import client_for
from tests.tasks.test_worker import Cluster, transitions, wait_until_finished

pytest_plugins = ["tests.api_support"]

BATCH = "/api/tasks/batch"


def item(i: int, **fields: Any) -> dict[str, Any]:
    return {"title": f"batch {i}", "handler": "echo", "payload": {"message": f"m{i}"}, **fields}


def nothing_written() -> bool:
    return (Task.objects.count(), TaskHistory.objects.count(), IdempotencyKey.objects.count()) == (0, 0, 0)


def published_ids(callbacks: list[Any]) -> list[list[str]]:
    """The task ids of each publish call made on commit (one list per call)."""
    return [
        [str(p.task_id) for p in c.args[0]]
        for c in callbacks
        if getattr(c, "func", None) and c.func.__module__ == "tasks.dispatch"
    ]


@pytest.mark.django_db
def test_a_batch_creates_every_task_with_its_history_and_publishes_them_together(
    api: Any, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    items = [item(i) for i in range(5)]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api.post(BATCH, {"tasks": items}, format="json")
    assert response.status_code == 201, response.data
    ids = [entry["id"] for entry in response.data["tasks"]]
    assert [entry["created"] for entry in response.data["tasks"]] == [True] * 5
    assert all(entry["url"].endswith(f"/api/tasks/{entry['id']}") for entry in response.data["tasks"])
    tasks = {str(t.pk): t for t in Task.objects.filter(pk__in=ids)}
    assert [tasks[i].title for i in ids] == [f"batch {i}" for i in range(5)]  # the answer keeps the request's order
    assert [(t.state, t.owner_id, t.dispatch_count, t.celery_task_id) for t in tasks.values()] == [
        ("queued", user.pk, 1, f"{t.pk}.1") for t in tasks.values()
    ]
    assert all(t.dispatched_at is not None and t.history_count == 1 for t in tasks.values())
    rows = TaskHistory.objects.filter(task_id__in=ids)
    assert sorted((str(r.task_id), r.seq, r.event, r.state_to, r.actor, r.channel, r.reason) for r in rows) == sorted(
        (i, 1, "created", "queued", "alice", "api", "submitted in a batch") for i in ids
    )
    assert list(verify_audit_chains()) == []
    assert published_ids(callbacks) == [ids]  # one publish call, after commit, for the whole batch
    assert [mirror.fetch(i)["state"] for i in ids] == ["queued"] * 5  # the mirror copied them after commit


@pytest.mark.django_db
def test_a_batch_is_a_fixed_number_of_statements_whatever_its_size(api: Any) -> None:
    def statements(count: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = api.post(BATCH, {"tasks": [item(i) for i in range(count)]}, format="json")
        assert response.status_code == 201
        return len(queries)

    statements(1)  # a first request's one-off reads (a connection's setup) are not the batch's
    assert statements(2) == statements(12)  # not one per task (SQLite splits an INSERT past 999 parameters)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"handler": "rm -rf"}, "handler"),
        ({"handler": "sleep", "payload": {"seconds": "abc"}}, "payload"),
        ({"handler": "agent_demo", "payload": {"max_iterations": 0}}, "payload"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": "crux.housekeeping"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"soft_time_limit": 5, "time_limit": 2}, "soft_time_limit"),
        ({"run_at": "2030-01-01T09:00:00"}, "run_at"),
        ({"state": "completed"}, "state"),
        ({"surprise": 1}, "surprise"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "é"}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_one_bad_item_refuses_the_batch_naming_its_index_and_field(bad: dict, field: str, api: Any) -> None:
    items = [item(0), item(1), {**item(2), **bad}, item(3)]
    response = api.post(BATCH, {"tasks": items}, format="json")
    assert response.status_code == 400, response.data
    errors = response.json()["tasks"]
    assert list(errors) == ["2"], errors
    assert field in errors["2"], errors
    assert nothing_written()


# What the parser refuses before any serializer runs, written into item 2 as raw JSON text.
UNSTORABLE = [
    ('"title": "a\\u0000b"', "title", "Null characters"),
    ('"description": "\\ud800"', "description", "Lone surrogate"),
    ('"idempotency_key": "k\\u0000"', "idempotency_key", "Null characters"),
    ('"payload": {"deep": {"\\u0000": 1}}', "payload", "Null characters"),
    ('"payload": {"n": NaN}', "payload", "not a number"),
    ('"priority": 1' + "0" * 5000, "priority", "more digits"),
    ('"payload": ' + "[" * 40 + "]" * 40, "payload", "API_JSON_MAX_DEPTH"),
    ('"ti\\u0000tle": 1', "ti\x00tle", "Null characters"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "field", "message"), UNSTORABLE, ids=[u[1] + ":" + u[2] for u in UNSTORABLE])
def test_an_unstorable_value_in_an_item_is_refused_naming_its_index_and_field(
    text: str, field: str, message: str, api: Any
) -> None:
    items = [json.dumps(item(i)) for i in range(4)]
    items[2] = items[2][:-1] + ", " + text + "}"
    response = api.post(BATCH, '{"tasks": [' + ", ".join(items) + "]}", content_type="application/json")
    assert response.status_code == 400, response.content
    errors = response.json()
    assert list(errors) == ["tasks"] and list(errors["tasks"]) == ["2"], errors
    assert list(errors["tasks"]["2"]) == [field], errors
    assert message in errors["tasks"]["2"][field][0]
    assert nothing_written()


@pytest.mark.django_db
def test_each_item_is_refused_with_the_errors_it_gets_alone(user: Any) -> None:
    items: list[dict[str, Any]] = [
        {"title": "a", "priority": 7, "soft_time_limit": 5, "time_limit": 10},  # passes: its values are remembered
        {"title": "a", "priority": 7, "soft_time_limit": 10, "time_limit": 5},  # the same values crossed: clean()
        {"title": "b", "priority": 10},
        {"title": "a", "priority": 10},  # a value refused before is refused again
        {"title": "", "queue": "nowhere"},
        {"title": "c", "max_attempts": "3"},  # converted by its field's check, then checked again
        {"title": "c", "max_attempts": "x"},
        {"title": "d", "handler": "sleep", "request_payload": {"seconds": "abc"}},
        {"title": "d", "handler": "sleep", "request_payload": {"seconds": 1}},
        {"title": "e", "queue": "nowhere"},
        {"title": "x" * 201, "handler": "sleep", "request_payload": {"steps": 0}},
    ]
    with pytest.raises(InvalidTaskData) as refused:
        services.submit_batch(owner=user, actor=user, channel=Channel.API, items=items)
    alone = {}
    for index, fields in enumerate(items):
        try:
            checked_submission(user, dict(fields), state=TaskState.QUEUED, run_after=None)
        except InvalidTaskData as exc:
            alone[str(index)] = exc.errors
    assert set(alone) == {"1", "2", "3", "4", "6", "7", "9", "10"}
    assert refused.value.errors == {"tasks": alone}
    assert nothing_written()


@pytest.mark.django_db
def test_a_batch_stores_each_task_and_its_history_row_as_a_single_submit_does(user: Any) -> None:
    fields = {
        "title": "same",
        "description": "token=ghp_" + "a1B2" * 9,
        "handler": "sleep",
        "request_payload": {"seconds": 0.5, "steps": 2},
        "priority": 8,
        "max_attempts": 4,
        "soft_time_limit": 5,
        "time_limit": 9.5,
        "retry_backoff": 0,
        "full_access": True,
        "metadata": {"team": "ops", "n": [1, 2.5, None], "é": "ü"},
        "acceptance_criteria": {"done": True},
    }
    alone = services.submit_task(owner=user, actor=user, channel=Channel.API, reason="submitted in a batch", **fields)
    [(batched, created)] = services.submit_batch(owner=user, actor=user, channel=Channel.API, items=[fields])
    assert created and not batched._state.adding and batched._state.db == "default"
    varying = {"id", "created_at", "updated_at", "dispatched_at", "history_head"}

    def stored(task: Task) -> dict[str, Any]:
        values = Task.objects.filter(pk=task.pk).values().get()
        assert values["updated_at"] == task.updated_at and values["history_head"] == task.history_head
        return {name: value for name, value in values.items() if name not in varying}

    def history(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
        row = TaskHistory.objects.filter(task_id=task.pk).values().get()
        changes = {name: value for name, value in row.pop("details")["changes"].items() if name not in varying}
        return {
            name: value for name, value in row.items() if name not in {"id", "task_id", "created_at", "hash"}
        }, changes

    assert stored(batched) == stored(alone)
    assert "[REDACTED" in stored(batched)["description"]
    assert history(batched) == history(alone)
    assert list(verify_audit_chains()) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tasks": []},
        {"tasks": "many"},
        {"tasks": {"0": item(0)}},
        {"tasks": [item(0), "not an object"]},
        {"tasks": [item(0)], "reason": "extra"},
    ],
)
def test_malformed_batches_answer_400_and_write_nothing(body: dict, api: Any) -> None:
    response = api.post(BATCH, body, format="json")
    assert response.status_code == 400, response.data
    assert set(response.data) <= {"tasks", "reason"} and response.data
    assert nothing_written()


@pytest.mark.django_db
def test_the_batch_limits_count_items_and_bytes(api: Any, settings: Any) -> None:
    settings.TASK_BATCH_MAX = 3
    response = api.post(BATCH, {"tasks": [item(i) for i in range(4)]}, format="json")
    assert response.status_code == 400
    assert "TASK_BATCH_MAX" in str(response.data["tasks"])
    settings.TASK_BATCH_MAX = 1000
    settings.API_SUBMIT_MAX_BYTES = 2_000
    settings.API_BATCH_MAX_BYTES = 20_000
    fits = {"tasks": [item(i) for i in range(40)]}  # ~3 KB: over the single submit's limit, within the batch's
    assert 2_000 < len(json.dumps(fits)) < 20_000
    assert api.post(BATCH, fits, format="json").status_code == 201
    assert api.post("/api/tasks/", {"title": "t", "description": "x" * 3_000}, format="json").status_code == 413
    too_big = {"tasks": [item(i, description="x" * 1_000) for i in range(30)]}
    response = api.post(BATCH, too_big, format="json")
    assert response.status_code == 413
    assert "API_BATCH_MAX_BYTES" in response.json()["detail"]
    assert Task.objects.count() == 40


@pytest.mark.django_db
def test_batch_items_are_idempotent_by_their_keys(api: Any) -> None:
    items = [item(0, idempotency_key="k-0"), item(1), item(2, idempotency_key="k-2"), item(0, idempotency_key="k-0")]
    first = api.post(BATCH, {"tasks": items}, format="json")
    assert first.status_code == 201, first.data
    ids = [entry["id"] for entry in first.data["tasks"]]
    assert [entry["created"] for entry in first.data["tasks"]] == [True, True, True, False]
    assert ids[3] == ids[0]  # the same key and fields later in the batch: the same task
    assert Task.objects.count() == 3 and IdempotencyKey.objects.count() == 2

    keyed_only = [items[0], items[2]]
    again = api.post(BATCH, {"tasks": keyed_only}, format="json")
    assert again.status_code == 200, again.data
    assert [(e["id"], e["created"]) for e in again.data["tasks"]] == [(ids[0], False), (ids[2], False)]
    mixed = api.post(BATCH, {"tasks": [items[2], item(9)]}, format="json")
    assert mixed.status_code == 201
    assert [e["created"] for e in mixed.data["tasks"]] == [False, True]
    assert Task.objects.count() == 4 and TaskHistory.objects.count() == 4

    single = api.post("/api/tasks/", item(0), format="json", HTTP_IDEMPOTENCY_KEY="k-0")
    assert single.status_code == 200 and single.data["id"] == ids[0]  # a single submit replays a batch item's key


@pytest.mark.django_db
def test_a_reused_key_with_other_fields_refuses_the_whole_batch(api: Any) -> None:
    api.post("/api/tasks/", item(0), format="json", HTTP_IDEMPOTENCY_KEY="taken")
    before = (Task.objects.count(), TaskHistory.objects.count(), IdempotencyKey.objects.count())
    response = api.post(BATCH, {"tasks": [item(1), item(2, idempotency_key="taken")]}, format="json")
    assert response.status_code == 409, response.data
    assert "Item 1" in response.data["tasks"][0]
    within = api.post(
        BATCH, {"tasks": [item(1, idempotency_key="twice"), item(2, idempotency_key="twice")]}, format="json"
    )
    assert within.status_code == 400 and "idempotency_key" in within.json()["tasks"]["1"]
    assert (Task.objects.count(), TaskHistory.objects.count(), IdempotencyKey.objects.count()) == before


@pytest.mark.django_db
def test_scheduled_items_wait_unpublished_and_credentials_are_redacted(
    api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    secret = "sk-ant-api03-" + "a" * 40
    items = [item(0, run_at="2099-01-01T00:00:00Z"), item(1, payload={"message": f"key {secret}"})]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(BATCH, {"tasks": items}, format="json")
    assert response.status_code == 201, response.data
    later, now = (Task.objects.get(pk=e["id"]) for e in response.data["tasks"])
    assert (later.dispatched_at, later.run_after.year) == (None, 2099)
    assert later.history.get().reason == "submitted in a batch; starts at 2099-01-01T00:00:00+00:00"
    assert published_ids(callbacks) == [[str(now.pk)]]
    assert secret not in json.dumps(now.request_payload) and "[REDACTED" in json.dumps(now.request_payload)


@pytest.mark.django_db
def test_the_batch_endpoint_refuses_anonymous_clients() -> None:
    response = client_for(None).post(BATCH, {"tasks": [item(0)]}, format="json")
    assert response.status_code in (401, 403)
    assert nothing_written()


@pytest.mark.django_db
def test_the_service_attributes_the_batch_to_its_actor_and_channel(user: Any) -> None:
    items = [{"title": f"load {i}", "request_payload": {"message": str(i)}} for i in range(2)]
    results = services.submit_batch(
        owner=user, actor="ops:loader", channel=Channel.COMMAND, items=items, reason="nightly load"
    )
    assert [created for _, created in results] == [True, True]
    rows = TaskHistory.objects.filter(task__in=[task for task, _ in results])
    assert {(r.actor, r.channel, r.reason) for r in rows} == {("ops:loader", "command", "nightly load")}


SUBMIT_BATCH = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from tasks import services
from tasks.audit import Channel
owner = get_user_model().objects.get(username="alice")
items = [{"title": f"echo {i}", "handler": "echo", "request_payload": {"message": f"m{i}"}} for i in range(40)]
results = services.submit_batch(owner=owner, actor=owner, channel=Channel.API, items=items)
print(json.dumps([str(task.pk) for task, _ in results]), flush=True)
"""


@pytest.fixture
def cluster(tmp_path: Any, private_redis: Any, live_db: Any, user: Any) -> Any:
    cluster = Cluster(tmp_path, private_redis.url)
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_a_real_worker_runs_every_task_of_a_batch_once(cluster: Cluster) -> None:
    cluster.worker(2)
    done = cluster.run_script(SUBMIT_BATCH)
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    wait_until_finished(ids, cluster, timeout=90)
    assert {transitions(i)[-1] for i in ids} == {"completed"}
    assert {tuple(transitions(i)) for i in ids} == {("queued", "running", "completed")}
