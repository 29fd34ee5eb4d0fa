"""Reads of task history: a task's latest rows, and the verification of every hash chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from tasks.audit import GENESIS_HASH, HASHED_FIELDS, row_hash
from tasks.models import Task, TaskHistory

_ROW_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")


@dataclass(frozen=True)
class ChainProblem:
    task_id: str
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f" seq {self.seq}" if self.seq is not None else ""
        return f"task {self.task_id}{where}: {self.problem}"


def _check_chain(task: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> Iterator[ChainProblem]:
    task_id = str(task["id"])
    expected_prev, expected_seq = GENESIS_HASH, 1
    for row in rows:
        if row["seq"] != expected_seq:
            yield ChainProblem(task_id, row["seq"], f"rows {expected_seq}..{row['seq'] - 1} are missing")
        if row["prev_hash"] != expected_prev:
            yield ChainProblem(task_id, row["seq"], "link broken: the previous row was removed, inserted or edited")
        if row_hash(row["prev_hash"], row) != row["hash"]:
            yield ChainProblem(task_id, row["seq"], "row edited: its content does not match its hash")
        expected_prev, expected_seq = row["hash"], row["seq"] + 1
    if not rows:
        yield ChainProblem(task_id, None, "task has no history rows")
        return
    last = rows[-1]
    if task["history_count"] != last["seq"] or task["history_head"] != last["hash"]:
        yield ChainProblem(
            task_id,
            None,
            f"chain head mismatch: task records {task['history_count']} rows, history ends at seq {last['seq']} "
            "(rows removed from or appended to the end)",
        )
    if task["state"] != last["state_to"]:
        yield ChainProblem(
            task_id,
            None,
            f"task is {task['state']} but its history ends in {last['state_to']}: changed outside the audit trail",
        )


def verify_audit_chains(
    *, batch_size: int = 500, progress: Callable[[int], object] | None = None
) -> Iterator[ChainProblem]:
    """Yield every broken link of every task's history chain (edited, removed or inserted rows)."""
    tasks = Task.objects.order_by("pk").values("id", "state", "history_count", "history_head")
    batch: list[Mapping[str, Any]] = []
    for task in tasks.iterator(chunk_size=batch_size):
        batch.append(task)
        if len(batch) >= batch_size:
            yield from _check_batch(batch)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        yield from _check_batch(batch)
        if progress:
            progress(len(batch))


def _check_batch(tasks: list[Mapping[str, Any]]) -> Iterator[ChainProblem]:
    rows = (
        TaskHistory.objects.filter(task_id__in=[t["id"] for t in tasks]).order_by("task_id", "seq").values(*_ROW_FIELDS)
    )
    by_task = {key: list(group) for key, group in groupby(rows, key=lambda r: r["task_id"])}
    for task in tasks:
        yield from _check_chain(task, by_task.get(task["id"], []))


def latest_history(task: Task, limit: int) -> tuple[list[TaskHistory], int]:
    """The task's last ``limit`` history rows in order, and how many it has in all."""
    total = TaskHistory.objects.filter(task=task).count()
    rows = list(TaskHistory.objects.filter(task=task).order_by("-seq")[:limit])
    rows.reverse()
    return rows, total
