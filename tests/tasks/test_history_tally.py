"""The history tally: what the counters derived from history read instead of grouping every history row.

Whatever was written, advanced, erased or reinstated, and in whatever order, the counts by kind equal those of
grouping the whole history (the ground truth, computed here apart from the selector), on both engines; on
PostgreSQL a row of a transaction still open when the tally advances is counted once it commits.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Count

from crux.celery import route_task
from tasks import services
from tasks.audit import Channel
from tasks.models import HISTORY_KIND, HistoryTally, HistoryTallyMark, Task, TaskHistory
from tasks.records import task_entries
from tasks.selectors import count_history_by_kind, count_history_rows
from tasks.services import tally
from tasks.tasks import history_tally


def ground_truth() -> Counter[tuple[str, ...]]:
    rows = TaskHistory.objects.order_by().values(*HISTORY_KIND).annotate(n=Count("pk"))
    return Counter({tuple(row[name] for name in HISTORY_KIND): row["n"] for row in rows})


def counted() -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for row in count_history_by_kind():
        kind = tuple(row[name] for name in HISTORY_KIND)
        assert kind not in counts, f"{kind} listed twice"
        counts[kind] = row["n"]
    return counts


def run(task: Task, *steps: str) -> None:
    for step in steps:
        services.transition(task.pk, step, actor="system:test", channel=Channel.WORKER, reason=step)


def mark() -> int:
    return HistoryTallyMark.objects.filter(pk=1).values_list("upto", flat=True).first() or 0


@pytest.mark.django_db
def test_counts_equal_grouping_every_row_before_and_after_advances(make_task: Any) -> None:
    first = [make_task() for _ in range(3)]
    run(first[0], "queued", "running", "completed")
    run(first[1], "queued")
    assert mark() == 0 and counted() == ground_truth()

    added = services.advance_history_tally()
    assert added == TaskHistory.objects.count() == sum(ground_truth().values()) == count_history_rows()
    assert mark() == TaskHistory.objects.latest("pk").pk
    assert counted() == ground_truth()
    assert services.advance_history_tally() == 0  # nothing new: the mark stays

    run(first[1], "running", "failed")  # kinds already tallied, and new ones, above the mark
    run(make_task(), "queued", "cancelled")
    assert counted() == ground_truth() and count_history_rows() == TaskHistory.objects.count()
    assert services.advance_history_tally() == 5
    assert counted() == ground_truth() and count_history_rows() == TaskHistory.objects.count()


@pytest.mark.django_db
def test_beat_advances_the_tally_on_the_housekeeping_queue(make_task: Any) -> None:
    run(make_task(), "queued", "running")
    entry = settings.CELERY_BEAT_SCHEDULE["history-tally"]
    assert entry == {"task": history_tally.name, "schedule": settings.HISTORY_TALLY_SECONDS}
    assert route_task(history_tally.name, (), {}, {}) == {"queue": settings.CELERY_HOUSEKEEPING_QUEUE}
    assert history_tally.apply().get() == 3 == TaskHistory.objects.count()
    assert mark() == TaskHistory.objects.latest("pk").pk and counted() == ground_truth()


@pytest.mark.django_db
def test_an_advance_moves_the_mark_a_chunk_of_ids_a_transaction(
    make_task: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each transaction counts the rows of at most ADVANCE_CHUNK_IDS ids, from the first id above the mark (the ids
    under the first row, here those of earlier tests' rolled-back rows, take none)."""
    for _ in range(3):
        run(make_task(), "queued")
    ids = list(TaskHistory.objects.order_by("pk").values_list("pk", flat=True))
    monkeypatch.setattr(tally, "ADVANCE_CHUNK_IDS", 2)
    marks: list[int] = []
    original = tally._advance_chunk

    def chunk() -> int | None:
        added = original()
        marks.append(mark())
        return added

    monkeypatch.setattr(tally, "_advance_chunk", chunk)
    assert services.advance_history_tally() == len(ids) == 6
    assert marks == [ids[1], ids[3], ids[5], ids[5]]  # three chunks of two rows, then nothing left
    assert counted() == ground_truth()


@pytest.mark.django_db
def test_a_scrape_reads_the_tally_not_every_row(make_task: Any) -> None:
    """The counts under the mark come from the tally: a tally row changed by hand shows in them."""
    run(make_task(), "queued", "running")
    services.advance_history_tally()
    row = HistoryTally.objects.get(event="transition", state_to="running")
    HistoryTally.objects.filter(pk=row.pk).update(count=row.count + 5)
    kind = tuple(getattr(row, name) for name in HISTORY_KIND)
    assert counted()[kind] == ground_truth()[kind] + 5
    assert count_history_rows() == TaskHistory.objects.count() + 5  # the stats' total too


@pytest.mark.django_db
def test_erasing_and_reinstating_tasks_keep_the_counts_whichever_side_of_the_mark(make_task: Any) -> None:
    below = make_task()
    run(below, "queued", "running")
    services.advance_history_tally()
    run(below, "completed")  # this task's rows lie on both sides of the mark
    above = make_task()
    run(above, "queued")
    heads = {pk: (count, head) for pk, count, head in Task.objects.values_list("pk", "history_count", "history_head")}
    entries = {pk: next(task_entries([pk])) for pk in heads}

    assert services.erase_tasks([below.pk, above.pk]) == 2
    assert not TaskHistory.objects.exists()
    assert counted() == ground_truth() == Counter() and count_history_rows() == 0
    assert sum(HistoryTally.objects.values_list("count", flat=True)) == 0

    for pk, head in heads.items():
        with transaction.atomic():
            reinstated = services.reinstate(
                entries[pk], history_head=head, actor="ops:test", channel=Channel.COMMAND, reason="test"
            )
        assert reinstated.history.count() == head[0] + 1  # its rows, and the one saying it came back
    assert counted() == ground_truth() and count_history_rows() == TaskHistory.objects.count()
    services.advance_history_tally()
    assert counted() == ground_truth() and count_history_rows() == TaskHistory.objects.count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite's writers take turns: none is open")
def test_postgresql_a_row_still_uncommitted_when_the_tally_advances_is_counted(
    user: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction that drew a history id and has not committed, while a later id is committed: the advance waits
    for it (the history table in SHARE mode) instead of moving its mark past a row it cannot see yet."""
    inserted, release = threading.Event(), threading.Event()
    drawn: list[int] = []

    def open_transaction() -> None:
        try:
            with transaction.atomic():
                task = services.create_task(owner=user, actor=user, channel=Channel.API, title="slow")
                drawn.append(TaskHistory.objects.get(task=task).pk)
                inserted.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=open_transaction)
    holder.start()
    try:
        assert inserted.wait(10)
        later = services.create_task(owner=user, actor=user, channel=Channel.API, title="fast")
        assert TaskHistory.objects.get(task=later).pk > drawn[0]  # committed, above the open one's row

        with pytest.raises(OperationalError, match="lock timeout"):  # within ADVANCE_LOCK_TIMEOUT_MS
            services.advance_history_tally()
        with caplog.at_level(logging.WARNING, logger="tasks.tasks"):
            assert history_tally.apply().get() == 0  # beat's job: logged, tried again at its next run
        assert "stopped short of the newest row" in caplog.text
        assert mark() == 0

        advancing = threading.Thread(target=lambda: (services.advance_history_tally(), connection.close()))
        monkeypatch.setattr(tally, "ADVANCE_LOCK_TIMEOUT_MS", 10_000)
        advancing.start()
        release.set()
        advancing.join(20)
        assert not advancing.is_alive()
    finally:
        release.set()
        holder.join(20)
    assert TaskHistory.objects.count() == 2
    assert mark() == TaskHistory.objects.latest("pk").pk
    assert counted() == ground_truth() and sum(counted().values()) == 2
    services.erase_tasks(list(Task.objects.values_list("pk", flat=True)))
    assert counted() == ground_truth() == Counter()
