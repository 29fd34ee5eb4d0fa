"""The task state machine: the one place where allowed transitions are declared."""

from django.db import models

from tasks.exceptions import IllegalTransition, UnknownState


class TaskState(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"


TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
ACTIVE_STATES = frozenset(set(TaskState) - TERMINAL_STATES)

TRANSITIONS: dict[str, frozenset[str]] = {
    TaskState.PENDING: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED, TaskState.PENDING}),
    # running -> queued: a failed attempt waits for its retry (Task.run_after), in one step with its history row.
    TaskState.RUNNING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.INTERRUPTED, TaskState.QUEUED}
    ),
    TaskState.INTERRUPTED: frozenset({TaskState.QUEUED, TaskState.FAILED, TaskState.CANCELLED}),
    # Operators may requeue a failed or cancelled task (recover); completed is final.
    TaskState.FAILED: frozenset({TaskState.QUEUED}),
    TaskState.CANCELLED: frozenset({TaskState.QUEUED}),
    TaskState.COMPLETED: frozenset(),
}


def check_state(value: str) -> TaskState:
    """Return the TaskState for ``value`` or raise UnknownState."""
    try:
        return TaskState(value)
    except ValueError:
        raise UnknownState(value) from None


def check_transition(state_from: str, state_to: str) -> None:
    """Raise IllegalTransition unless ``state_from -> state_to`` is declared above."""
    source, target = check_state(state_from), check_state(state_to)
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(source, target, TRANSITIONS[source])


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES
