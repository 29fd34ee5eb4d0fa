"""Reads of task history: a task's latest rows, and the verification of the whole audit trail."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from tasks import checkpoints, db_triggers, hooks, keys
from tasks.audit import GENESIS_HASH, HASHED_FIELDS, row_hash
from tasks.checkpoints import Checkpoint, Entry
from tasks.models import DigestField, HistoryPurgeGrant, Task, TaskHistory

_ROW_FIELDS = (*HASHED_FIELDS, "hash")


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with the audit trail: ``subject`` is "task <id>", "purge ledger", "checkpoint <file>"..."""

    subject: str
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.subject}{where}: {self.problem}"


def _link_problem(row: Mapping[str, Any], prev_hash: str) -> str | None:
    """Why ``row``'s HMAC, chained to ``prev_hash`` (the previous row's), does not verify, if it does not."""
    if not row["key_id"]:
        return "row not signed with an audit key (an unkeyed hash anyone can recompute)"
    try:
        expected = row_hash(prev_hash, row)
    except keys.UnknownKey:
        return f"row signed with unknown audit key {row['key_id']!r} (forged, or its key was retired)"
    if not hmac.compare_digest(expected, row["hash"]):
        return (
            "row edited, or the row before it removed, inserted or edited, or the chain recomputed: "
            "its HMAC does not match (no audit key made it)"
        )
    return None


def _check_chain(task: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> Iterator[ChainProblem]:
    subject = f"task {task['id']}"
    expected_prev, expected_seq = GENESIS_HASH, 1
    for row in rows:
        if row["seq"] != expected_seq:
            yield ChainProblem(subject, row["seq"], f"rows {expected_seq}..{row['seq'] - 1} are missing")
        problem = _link_problem(row, expected_prev)
        if problem:
            yield ChainProblem(subject, row["seq"], problem)
        expected_prev, expected_seq = row["hash"], row["seq"] + 1
    if not rows:
        yield ChainProblem(subject, None, "task has no history rows")
        return
    last = rows[-1]
    if task["history_count"] != last["seq"] or task["history_head"] != last["hash"]:
        yield ChainProblem(
            subject,
            None,
            f"chain head mismatch: task records {task['history_count']} rows, history ends at seq {last['seq']} "
            "(rows removed from or appended to the end)",
        )
    if task["state"] != last["state_to"]:
        yield ChainProblem(
            subject,
            None,
            f"task is {task['state']} but its history ends in {last['state_to']}: changed outside the audit trail",
        )


def _check_against(checkpoint: Checkpoint, entry: Entry, rows: list[Mapping[str, Any]]) -> Iterator[ChainProblem]:
    """The chain still holds what ``checkpoint`` saw: its row ``entry.seq`` has the checkpointed hash."""
    subject, seen = f"task {entry.task_id}", f"checkpoint {checkpoint.name}"
    at = [row for row in rows if row["seq"] == entry.seq]
    if not at:
        yield ChainProblem(
            subject, entry.seq, f"row missing: {seen} recorded the chain up to seq {entry.seq}, it is gone"
        )
    elif at[0]["hash"] != entry.head:
        yield ChainProblem(subject, entry.seq, f"chain rewritten: its hash differs from the one {seen} recorded")


class _CheckpointCursor:
    """Walks a checkpoint's entries (in task id order) alongside the database's tasks (in the same order)."""

    def __init__(self, checkpoint: Checkpoint | None, ledger: hooks.SignedLedger | None) -> None:
        self.checkpoint, self.ledger = checkpoint, ledger
        self.entries = checkpoint.entries() if checkpoint else iter(())
        self.pending = next(self.entries, None)
        self.vanished: set[UUID] = set()

    def take(self, task_id: Any) -> tuple[list[ChainProblem], Entry | None]:
        """Problems of checkpointed tasks before ``task_id`` (vanished ones), and ``task_id``'s own entry."""
        problems: list[ChainProblem] = []
        while self.pending is not None and self.pending.task_id < task_id:
            problems.extend(self._vanished(self.pending))
            self.pending = next(self.entries, None)
        if self.pending is not None and self.pending.task_id == task_id:
            entry, self.pending = self.pending, next(self.entries, None)
            return problems, entry
        return problems, None

    def rest(self) -> Iterator[ChainProblem]:
        while self.pending is not None:
            yield from self._vanished(self.pending)
            self.pending = next(self.entries, None)

    def _vanished(self, entry: Entry) -> Iterator[ChainProblem]:
        assert self.checkpoint is not None  # entries come from it
        tombstone = self.ledger.tombstones([entry.task_id]).get(entry.task_id) if self.ledger else None
        if tombstone is None or not checkpoints.covers(tombstone, entry):
            self.vanished.add(entry.task_id)
            yield ChainProblem(
                f"task {entry.task_id}",
                None,
                f"vanished: in checkpoint {self.checkpoint.name} (created "
                f"{self.checkpoint.created_at:%Y-%m-%d %H:%M:%S}Z, {entry.seq} history rows) but not in the "
                "database, and no valid tombstone accounts for it",
            )


def _database_problems() -> Iterator[ChainProblem]:
    """Append-only triggers missing; purge grants outside a purge (a purge removes its own before it commits)."""
    for name in sorted(set(db_triggers.HISTORY_TRIGGERS) - db_triggers.installed_history_triggers(connection)):
        yield ChainProblem("database", None, f"append-only trigger {name} is missing: history can be rewritten")
    for grant in HistoryPurgeGrant.objects.order_by("task_id"):
        valid = bool(grant.mac) and hmac.compare_digest(grant.mac, keys.grant_mac(grant.task_id, grant.nonce))
        yield ChainProblem(
            f"purge grant for task {grant.task_id}",
            None,
            "left outside a purge (validly signed)" if valid else "forged: its MAC is invalid (inserted by hand)",
        )


def verify_audit_chains(
    *,
    batch_size: int = 500,
    progress: Callable[[int], object] | None = None,
    checkpoint: tuple[Checkpoint | None, list[str]] | None = None,
) -> Iterator[ChainProblem]:
    """Yield everything wrong with the audit trail.

    Each task's chain (edited, removed, inserted or re-signed rows, a head that moved); the newest valid
    checkpoint (``checkpoint``: as ``checkpoints.newest()`` returns it, looked up if None) against the
    database: a task vanished without a valid tombstone, a chain cut or rewritten since; tasks the stores
    above saw (``hooks.add_task_witness``) gone the same way; the purge ledger's signed chain; purge grants
    found outside a purge; missing append-only triggers.
    """
    yield from _database_problems()
    newest, unreadable = checkpoint if checkpoint is not None else checkpoints.newest()
    for message in unreadable:
        yield ChainProblem("checkpoint", None, message)
    ledger = hooks.purge_ledger()
    if ledger is not None:
        for message in ledger.problems(newest.ledger if newest else None):
            yield ChainProblem("purge ledger", None, message)
    cursor = _CheckpointCursor(newest, ledger)
    tasks = Task.objects.order_by("pk").values("id", "state", "history_count", "history_head")
    batch: list[Mapping[str, Any]] = []
    for task in tasks.iterator(chunk_size=batch_size):
        batch.append(task)
        if len(batch) >= batch_size:
            yield from _check_batch(batch, cursor)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        yield from _check_batch(batch, cursor)
        if progress:
            progress(len(batch))
    yield from cursor.rest()
    yield from _witnessed(ledger, cursor.vanished)


def _witnessed(ledger: hooks.SignedLedger | None, named: set[UUID]) -> Iterator[ChainProblem]:
    """Tasks a store saw (the mirror, Celery's results) that SQL lacks without a valid tombstone: removed whole,
    even if no checkpoint saw them."""
    for store, witness in hooks.task_witnesses().items():
        ids: list[UUID] = []
        for text in witness():
            try:
                ids.append(UUID(str(text)))
            except ValueError:
                continue
        for start in range(0, len(ids), 1000):
            batch = set(ids[start : start + 1000]) - named
            missing = batch - set(Task.objects.filter(pk__in=batch).values_list("pk", flat=True))
            if missing and ledger is not None:
                missing -= ledger.tombstones(missing).keys()
            for task_id in sorted(missing):
                named.add(task_id)
                yield ChainProblem(
                    f"task {task_id}", None, f"vanished: {store} saw it, but SQL has neither it nor a valid tombstone"
                )


def _check_batch(tasks: list[Mapping[str, Any]], cursor: _CheckpointCursor) -> Iterator[ChainProblem]:
    rows = (
        TaskHistory.objects.filter(task_id__in=[t["id"] for t in tasks]).order_by("task_id", "seq").values(*_ROW_FIELDS)
    )
    by_task = {key: list(group) for key, group in groupby(rows, key=lambda r: r["task_id"])}
    for task in tasks:
        chain = by_task.get(task["id"], [])
        vanished, entry = cursor.take(task["id"])
        yield from vanished
        yield from _check_chain(task, chain)
        if entry is not None and cursor.checkpoint is not None:
            yield from _check_against(cursor.checkpoint, entry, chain)


def latest_history(task: Task, limit: int) -> tuple[list[TaskHistory], int]:
    """The task's last ``limit`` history rows in order, and how many it has in all."""
    total = TaskHistory.objects.filter(task=task).count()
    rows = list(TaskHistory.objects.filter(task=task).order_by("-seq")[:limit])
    rows.reverse()
    return rows, total


def with_previous_links(rows: QuerySet[TaskHistory]) -> QuerySet[TaskHistory]:
    """History rows, each with ``prev_hash``: the hash of the row before it (the genesis hash before the first),
    derived, not stored; one lookup by the (task, seq) key per row."""
    before = TaskHistory.objects.filter(task_id=OuterRef("task_id"), seq=OuterRef("seq") - 1).values("hash")[:1]
    genesis = Value(GENESIS_HASH, output_field=DigestField())
    return rows.annotate(prev_hash=Coalesce(Subquery(before), genesis, output_field=DigestField()))


def previous_link(row: TaskHistory) -> str:
    """The hash ``row`` is chained to: its ``prev_hash`` if read with ``with_previous_links``, else looked up."""
    annotated = getattr(row, "prev_hash", None)
    if annotated is not None:
        return str(annotated)
    before = TaskHistory.objects.filter(task_id=row.task_id, seq=row.seq - 1).values_list("hash", flat=True).first()
    return GENESIS_HASH if before is None else str(before)
