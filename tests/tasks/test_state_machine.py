"""The transition table is the law: legal moves write one row, illegal ones write nothing."""

import itertools

import pytest

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import IllegalTransition, InvalidTaskData, StaleState, TaskNotFound, UnknownState
from tasks.models import Task, TaskHistory
from tasks.states import TERMINAL_STATES, TRANSITIONS, TaskState, check_transition

pytestmark = pytest.mark.django_db

ALL_PAIRS = list(itertools.product(TaskState, TaskState))


def move(task, to_state, **kw):
    return services.transition(task.pk, to_state, actor="system:test", channel=Channel.SYSTEM, reason="test", **kw)


def drive_to(task, state):
    """Walk a fresh task to ``state`` along legal transitions."""
    paths = {
        TaskState.PENDING: [],
        TaskState.QUEUED: ["queued"],
        TaskState.RUNNING: ["queued", "running"],
        TaskState.COMPLETED: ["queued", "running", "completed"],
        TaskState.FAILED: ["queued", "running", "failed"],
        TaskState.CANCELLED: ["cancelled"],
        TaskState.INTERRUPTED: ["queued", "running", "interrupted"],
    }
    for step in paths[state]:
        task = move(task, step)
    return task


def test_table_declares_every_state_and_completed_is_final():
    assert set(TRANSITIONS) == set(TaskState)
    assert TRANSITIONS[TaskState.COMPLETED] == frozenset()
    assert TERMINAL_STATES == {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_follows_the_table(make_task, source, target):
    task = drive_to(make_task(), source)
    rows_before = TaskHistory.objects.filter(task=task).count()
    if target in TRANSITIONS[source]:
        moved = move(task, target)
        assert moved.state == target
        assert TaskHistory.objects.filter(task=task).count() == rows_before + 1
        last = TaskHistory.objects.filter(task=task).latest("seq")
        assert (last.state_from, last.state_to, last.event) == (source, target, "transition")
    else:
        with pytest.raises(IllegalTransition):
            move(task, target)
        task.refresh_from_db()
        assert task.state == source
        assert TaskHistory.objects.filter(task=task).count() == rows_before


def test_illegal_transition_writes_nothing_even_with_field_updates(make_task):
    task = drive_to(make_task(), TaskState.COMPLETED)
    with pytest.raises(IllegalTransition, match="completed -> running"):
        move(task, "running", current_phase="should not stick", attempt_count=9)
    task.refresh_from_db()
    assert (task.state, task.current_phase, task.attempt_count) == ("completed", "", 0)
    assert task.history.count() == 4


def test_unknown_state_is_a_typed_error(make_task):
    task = make_task()
    with pytest.raises(UnknownState, match="'exploded'"):
        move(task, "exploded")
    with pytest.raises(UnknownState):
        check_transition("pending", "nope")
    assert task.history.count() == 1


def test_transition_timestamps(make_task):
    task = move(drive_to(make_task(), TaskState.QUEUED), "running")
    assert task.started_at is not None and task.completed_at is None
    task = move(task, "failed", last_error="boom")
    assert task.completed_at is not None and task.error_count == 1
    assert task.history.latest("seq").error_message == "boom"
    task = move(task, "queued")
    assert task.completed_at is None


def test_compare_and_set_on_state_and_attempt(make_task):
    task = drive_to(make_task(), TaskState.QUEUED)
    with pytest.raises(StaleState):
        move(task, "running", expected_state="pending")
    with pytest.raises(StaleState):
        move(task, "running", expected_state="queued", expected_attempt=3)
    moved = move(task, "running", expected_state="queued", expected_attempt=0, attempt_count=1)
    assert moved.attempt_count == 1
    assert moved.history.count() == 3


def test_unknown_task_and_malformed_id(db):
    import uuid

    with pytest.raises(TaskNotFound):
        services.transition(uuid.uuid4(), "queued", actor="system:test", channel=Channel.SYSTEM)
    with pytest.raises(InvalidTaskData) as info:
        services.transition("not-a-uuid", "queued", actor="system:test", channel=Channel.SYSTEM)
    assert "task_id" in info.value.errors


def test_missing_and_invalid_fields_write_nothing(user):
    with pytest.raises(InvalidTaskData) as info:
        services.create_task(owner=user, actor=user, channel=Channel.API, title="")
    assert "title" in info.value.errors
    with pytest.raises(InvalidTaskData) as info:
        services.create_task(owner=user, actor=user, channel=Channel.API, title="x", max_attempts=0)
    assert "max_attempts" in info.value.errors
    with pytest.raises(InvalidTaskData) as info:
        services.create_task(owner=user, actor=user, channel=Channel.API, title="x", state="running")
    assert info.value.errors == {"state": ["This field cannot be set here."]}
    with pytest.raises(InvalidTaskData) as info:
        services.create_task(owner=user, actor=user, channel=Channel.API, title="x" * 201)
    assert "title" in info.value.errors
    assert Task.objects.count() == 0
    assert TaskHistory.objects.count() == 0


def test_invalid_field_in_transition_writes_nothing(make_task):
    task = drive_to(make_task(), TaskState.QUEUED)
    with pytest.raises(InvalidTaskData) as info:
        move(task, "running", progress=7.5)
    assert "progress" in info.value.errors
    with pytest.raises(InvalidTaskData):
        move(task, "running", title="renaming is an edit, not a transition")
    task.refresh_from_db()
    assert task.state == "queued"
    assert task.history.count() == 2
