"""Redis mirrors committed state; it can be flushed or die at any moment and nothing is lost."""

import json
import uuid
from datetime import UTC, datetime
from io import StringIO

import pytest
import redis
from django.core.management import call_command
from django.db import transaction
from prometheus_client import REGISTRY

from persistence import mirror
from persistence.selectors import task_status
from persistence.services import reconcile_mirror
from tasks import services
from tasks.audit import Channel
from tasks.exceptions import TaskNotFound
from tasks.models import Task
from tests.conftest import free_port, redis_caches

pytestmark = pytest.mark.django_db


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run a block and then its after-commit callbacks, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def move(task_id, state, **kw):
    return services.transition(task_id, state, actor="system:test", channel=Channel.WORKER, reason=state, **kw)


def entry(task_id):
    raw = mirror.client().get(mirror.task_key(task_id))
    return None if raw is None else json.loads(raw)


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reconcile_cmd(*args):
    out = StringIO()
    try:
        call_command("reconcile", "--no-progress", *args, stdout=out, stderr=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_committed_changes_reach_the_mirror_live_without_ttl(make_task, commit):
    task = make_task(title="mirrored")
    doc = entry(task.pk)
    assert (doc["state"], doc["title"], doc["owner_id"]) == ("pending", "mirrored", task.owner_id)
    assert mirror.client().ttl(mirror.task_key(task.pk)) == -1
    with commit():
        move(task.pk, "queued")
        move(task.pk, "running")
    assert entry(task.pk)["state"] == "running"
    assert mirror.client().ttl(mirror.task_key(task.pk)) == -1
    with commit():
        move(task.pk, "completed")
    assert entry(task.pk)["state"] == "completed"
    assert 0 < mirror.client().ttl(mirror.task_key(task.pk)) <= 86400


def test_rolled_back_change_never_reaches_the_mirror(user, commit):
    with commit(), pytest.raises(RuntimeError), transaction.atomic():
        task = services.create_task(owner=user, actor=user, channel=Channel.API, title="ghost")
        raise RuntimeError("abort")
    assert entry(task.pk) is None
    assert not Task.objects.filter(pk=task.pk).exists()


def test_status_reads_through_and_repopulates_a_miss(make_task):
    task = make_task()
    mirror.client().delete(mirror.task_key(task.pk))
    sql_reads = sample("crux_mirror_reads_total", source="sql")
    doc = task_status(task.pk)
    assert doc["state"] == "pending" and doc["id"] == str(task.pk)
    assert sample("crux_mirror_reads_total", source="sql") == sql_reads + 1
    assert entry(task.pk) == doc
    redis_reads = sample("crux_mirror_reads_total", source="redis")
    assert task_status(str(task.pk)) == doc
    assert sample("crux_mirror_reads_total", source="redis") == redis_reads + 1
    with pytest.raises(TaskNotFound):
        task_status(uuid.uuid4())


def test_an_older_write_never_replaces_a_newer_entry(make_task, commit):
    task = make_task()
    old_doc = mirror.snapshot_of(task)
    with commit():
        move(task.pk, "queued")
    assert mirror.refresh(old_doc) is True  # Redis answered; the script declined
    assert entry(task.pk)["state"] == "queued"


def test_flushall_then_reads_and_reconcile_restore_every_entry(private_redis, make_task, commit):
    live = [make_task(title=f"live {i}") for i in range(30)]
    done = [make_task(title=f"done {i}") for i in range(10)]
    with commit():
        for task in live[:10]:
            move(task.pk, "queued")
        for task in done:
            move(task.pk, "cancelled")
    expected = {str(t.pk): mirror.snapshot_of(Task.objects.get(pk=t.pk)) for t in live + done}
    assert all(entry(pk) == doc for pk, doc in expected.items())

    private_redis.client.flushall()
    assert private_redis.client.dbsize() == 0
    code, out = reconcile_cmd("--check")
    assert code == 1 and "missing 40" in out
    for task in live[:5]:
        assert task_status(task.pk) == expected[str(task.pk)]
    report = reconcile_mirror()
    assert (report.missing, report.stale, report.orphan, report.repaired) == (35, 0, 0, 35)
    assert {pk: entry(pk) for pk in expected} == expected
    code, out = reconcile_cmd("--check")
    assert code == 0 and "missing 0, stale 0, orphan 0" in out


def test_reconcile_repairs_stale_and_orphan_entries(make_task):
    tasks = [make_task(title=f"t{i}") for i in range(3)]
    conn = mirror.client()
    wrong = {**entry(tasks[0].pk), "state": "completed"}
    conn.set(mirror.task_key(tasks[0].pk), json.dumps(wrong))
    ghost = uuid.uuid4()
    conn.set(mirror.task_key(ghost), json.dumps({"id": str(ghost), "state": "running", "version": 1}))
    conn.set(mirror.task_key("not-a-uuid"), "{}")
    code, out = reconcile_cmd("--check")
    # The ghost names a task SQL never held and no purge tombstone accounts for: evidence, not drift.
    assert code == 3 and "stale 1, orphan 1, vanished 1" in out
    assert entry(tasks[0].pk)["state"] == "completed"  # --check repaired nothing
    code, out = reconcile_cmd()
    assert code == 3 and "repaired 2" in out
    assert entry(tasks[0].pk)["state"] == "pending"
    assert conn.get(mirror.task_key("not-a-uuid")) is None
    assert conn.get(mirror.task_key(ghost)) is not None, "the entry of a vanished task is kept as evidence"
    code, out = reconcile_cmd("--forget-vanished")
    assert code == 0 and conn.get(mirror.task_key(ghost)) is None


def test_reconcile_checks_old_finished_entries_that_are_still_present(make_task, commit, settings):
    task = make_task()
    with commit():
        move(task.pk, "cancelled")
    settings.MIRROR_TERMINAL_TTL = 0  # the task is now outside the window a rebuild must cover
    conn = mirror.client()
    conn.set(mirror.task_key(task.pk), json.dumps({**entry(task.pk), "title": "tampered"}))
    report = reconcile_mirror()
    assert (report.stale, report.missing) == (1, 0)
    assert entry(task.pk)["title"] == "a task"


def unreachable_redis(settings):
    settings.CACHES = redis_caches(f"redis://127.0.0.1:{free_port()}/0")


def test_writes_succeed_and_reads_fall_back_when_redis_is_unreachable(settings, make_task, commit):
    unreachable_redis(settings)
    failures = sample("crux_mirror_failures_total", operation="write")
    task = make_task(title="written while redis is away")
    with commit():
        move(task.pk, "queued")
        move(task.pk, "running")
    assert Task.objects.get(pk=task.pk).state == "running"
    assert task.history.count() == 3
    assert sample("crux_mirror_failures_total", operation="write") == failures + 3
    read_failures = sample("crux_mirror_failures_total", operation="read")
    assert task_status(task.pk)["state"] == "running"
    assert sample("crux_mirror_failures_total", operation="read") == read_failures + 1
    code, out = reconcile_cmd()
    assert code == 1 and "Redis unreachable" in out


def test_redis_killed_mid_stream_loses_nothing_and_heals(private_redis, make_task, commit, settings):
    tasks = [make_task(title=f"before crash {i}") for i in range(5)]
    private_redis.kill()
    with commit():
        for task in tasks:
            move(task.pk, "queued")
    after = [make_task(title=f"after crash {i}") for i in range(5)]
    assert Task.objects.filter(state="queued").count() == 5
    assert all(task_status(t.pk)["state"] == "pending" for t in after)
    with pytest.raises(redis.ConnectionError):
        mirror.client().ping()

    restarted = type(private_redis)()  # Redis comes back empty, on another port
    try:
        settings.CACHES = redis_caches(restarted.url)
        report = reconcile_mirror()
        assert report.missing == 10 and report.repaired == 10
        assert all(entry(t.pk)["state"] == "queued" for t in tasks)
    finally:
        restarted.stop()


def legacy_bytes(doc):
    """What the mirror stored before orjson: entries must compare equal across the change."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


TYPICAL = {
    "id": "35bf992d-c9e9-4616-a12e-7696a6cecc1b",
    "title": "parser audit task",
    "state": "queued",
    "owner_id": 1,
    "role": "",
    "provider": "claude",
    "progress": 0.0,
    "current_phase": "",
    "attempt_count": 0,
    "max_attempts": 3,
    "last_error": "",
    "created_at": "2026-11-17T11:12:23.288300+00:00",
    "updated_at": "2026-11-25T02:52:06+00:00",
    "started_at": None,
    "completed_at": None,
    "deleted_at": None,
    "version": 1795575126000000,
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"title": "café ✓ \u2028 emoji 🚀"},
        {"title": 'del \x7f and controls \x00\x1f\n\t"\\/'},
        {"last_error": "lone surrogate \ud800"},
        {"progress": 1.0},
        {"progress": 0.5},
        {"progress": 1e-4},
        {"progress": 9.999999999999999e-05},
        {"progress": 2.5e-05},
        {"progress": 1e-7},
        {"progress": float("nan")},
        {"owner_id": None, "completed_at": "2026-11-25T02:52:06.000001+00:00"},
    ],
)
def test_encode_writes_the_bytes_of_the_json_module(changes):
    doc = {**TYPICAL, **changes}
    assert mirror.encode(doc) == legacy_bytes(doc)


def test_encode_takes_datetimes_and_uuids_as_their_iso_and_text_form():
    when = datetime(2026, 11, 25, 2, 52, 6, tzinfo=UTC)
    exact = when.replace(microsecond=123456)
    as_text = {**TYPICAL, "created_at": exact.isoformat(), "updated_at": when.isoformat()}
    expected = legacy_bytes(as_text)
    assert mirror.encode({**TYPICAL, "created_at": exact, "updated_at": when}) == expected
    naive = {**TYPICAL, "created_at": exact.replace(tzinfo=None), "updated_at": when.replace(tzinfo=None)}
    assert mirror.encode(naive) == expected  # SQLite rows: naive datetimes are UTC
    assert mirror.encode({**as_text, "id": uuid.UUID(TYPICAL["id"])}) == expected


def test_rebuild_from_empty_writes_the_bytes_a_publish_writes(make_task, commit):
    odd = make_task(title="café ✓ \x7f")
    done = make_task(title="finished")
    with commit():
        move(odd.pk, "queued", progress=2.5e-05, last_error="naïve\u2028")
        move(done.pk, "cancelled")
    conn = mirror.client()
    keys = {task.pk: mirror.task_key(task.pk) for task in (odd, done)}
    published = {pk: conn.get(key) for pk, key in keys.items()}
    assert all(published[pk] == legacy_bytes(mirror.snapshot_of(Task.objects.get(pk=pk))) for pk in keys)
    conn.delete(*keys.values())
    report = reconcile_mirror()
    assert report.missing == 2 and report.stale == 0
    assert {pk: conn.get(key) for pk, key in keys.items()} == published
    assert conn.ttl(keys[odd.pk]) == -1 and 0 < conn.ttl(keys[done.pk]) <= 86400


def test_reconcile_never_replaces_a_newer_entry_and_clears_a_stale_ttl(make_task):
    ahead, behind = make_task(title="ahead"), make_task(title="behind")
    conn = mirror.client()
    newer = {**entry(ahead.pk), "title": "written by a later change", "version": entry(ahead.pk)["version"] + 1}
    conn.set(mirror.task_key(ahead.pk), json.dumps(newer))
    older = {**entry(behind.pk), "title": "written by an earlier change", "version": entry(behind.pk)["version"] - 1}
    conn.set(mirror.task_key(behind.pk), json.dumps(older), ex=600)
    report = reconcile_mirror()
    assert (report.missing, report.stale) == (0, 1)
    assert entry(ahead.pk) == newer
    assert entry(behind.pk)["title"] == "behind" and conn.ttl(mirror.task_key(behind.pk)) == -1
