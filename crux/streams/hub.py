"""The one poller of a stream process: reads what committed since its last look and fans it out to subscribers.

However many clients follow, one asyncio task reads the database every STREAM_POLL_SECONDS, on one thread
(one connection; each client's opening reads run there too): the new ids of both tables (an index range on the
primary key, across all tasks, so a hole left by a transaction still committing is seen:
``tasks.selectors.events.Frontier``), then the rows of the tasks someone follows, then the progress of the
tasks being watched. Each event is serialized once, as the
API shows it, and put on every interested subscriber's bounded queue: a client too slow to keep up is closed
(it reconnects with Last-Event-ID) and never holds the others back. The poller stops when the last
subscriber leaves and starts again, from what is newest, with the next one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import close_old_connections, connection
from rest_framework.utils.encoders import JSONEncoder

from tasks.api.serializers import TaskHistorySerializer, TaskOutputSerializer
from tasks.models import TaskHistory, TaskOutput, TaskQuerySet
from tasks.selectors.events import Cursor, Frontier, Progress, Row, new_ids, newest_cursor, progress_of, rows_with_ids
from tasks.states import TaskState, is_terminal

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Event:
    """One event, its SSE ``event:`` and ``data:`` lines rendered once for every subscriber; ``row`` (durable
    events) moves the subscriber's cursor, ``state`` is a history row's new state."""

    task_id: uuid.UUID
    body: bytes
    row: Row | None = None
    state: str = ""


def render(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, cls=JSONEncoder)}\n".encode()


def row_event(row: Row) -> Event:
    """A history row or an output as the API serializes it (redaction included), with its task's id."""
    if isinstance(row, TaskHistory):
        data = {"task": str(row.task_id), **TaskHistorySerializer(row).data}
        return Event(row.task_id, render(row.event, data), row, row.state_to)
    return Event(row.task_id, render("output", {"task": str(row.task_id), **TaskOutputSerializer(row).data}), row)


def progress_event(progress: Progress) -> Event:
    data = {
        "task": str(progress.task_id),
        "state": progress.state,
        "progress": progress.progress,
        "phase": progress.phase,
        "updated_at": progress.updated_at,
    }
    return Event(progress.task_id, render("progress", data))


@dataclass(eq=False)
class Subscriber:
    """A client's stream: one task (``task_id``), or every task of ``tasks`` (the visible, filtered ones)."""

    task_id: uuid.UUID | None = None
    tasks: TaskQuerySet | None = None
    # Tasks whose progress this subscriber is sent (its task; for many, those running).
    watch: set[uuid.UUID] = field(default_factory=set)
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(settings.STREAM_QUEUE_SIZE))
    overflowed: bool = False

    def put(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
        return not self.overflowed


@dataclass
class Batch:
    """What one poll read: the rows taken, who gets which, and the progress that changed."""

    rows: list[Row] = field(default_factory=list)
    matches: dict[Subscriber, set[uuid.UUID]] = field(default_factory=dict)
    progress: dict[uuid.UUID, Progress] = field(default_factory=dict)


class Hub:
    """The process's poller and its subscribers (module-level ``hub``)."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.history: Frontier | None = None
        self.outputs: Frontier | None = None
        self.last_progress: dict[uuid.UUID, Progress] = {}
        self._poller: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        # Every database read of the streams, the poller's and each client's opening, runs on this one thread:
        # one connection per process, never a thread or a connection per client.
        self._database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-db")

    async def run_sync(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function`` on the hub's database thread."""
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._database, call)

    def frontier(self) -> Cursor:
        assert self.history is not None and self.outputs is not None  # set by subscribe()
        return Cursor(self.history.high, self.outputs.high)

    async def subscribe(self, subscriber: Subscriber) -> Cursor:
        """Start delivering to ``subscriber`` every event after the returned cursor (the poller's frontier)."""
        async with self._starting:
            if self._poller is None or self._poller.done():
                start = await self.run_sync(newest_cursor)
                grace = settings.STREAM_HOLE_GRACE_SECONDS
                self.history, self.outputs = Frontier(start.history, grace), Frontier(start.output, grace)
                self.last_progress = {}
                self._poller = asyncio.get_running_loop().create_task(self._run())
            self.subscribers.add(subscriber)
            return self.frontier()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def _run(self) -> None:
        while self.subscribers:
            try:
                await self.poll()
            except Exception:  # the database refused or went away: log, drop the connection, try again next time
                logger.exception("stream poll failed; retrying")
                await self.run_sync(connection.close)
            await asyncio.sleep(settings.STREAM_POLL_SECONDS)

    async def poll(self) -> None:
        assert self.history is not None and self.outputs is not None
        subscribers = list(self.subscribers)
        history_ids, output_ids = await self.run_sync(self._new_ids, self.history.high, self.outputs.high)
        now = time.monotonic()
        taken_history = set(self.history.take([pk for pk, _ in history_ids], now))
        taken_outputs = set(self.outputs.take([pk for pk, _ in output_ids], now))
        new_rows = (
            [(pk, task) for pk, task in history_ids if pk in taken_history],
            [(pk, task) for pk, task in output_ids if pk in taken_outputs],
        )
        batch = await self.run_sync(self._read, subscribers, new_rows, self._watched(subscribers))
        self._deliver(subscribers, batch)

    @staticmethod
    def _new_ids(history_after: int, output_after: int) -> tuple[list[tuple[int, uuid.UUID]], ...]:
        close_old_connections()
        return new_ids(TaskHistory, history_after), new_ids(TaskOutput, output_after)

    @staticmethod
    def _watched(subscribers: list[Subscriber]) -> set[uuid.UUID]:
        return {task for subscriber in subscribers for task in subscriber.watch}

    def _read(
        self,
        subscribers: list[Subscriber],
        new_rows: tuple[list[tuple[int, uuid.UUID]], list[tuple[int, uuid.UUID]]],
        watched: set[uuid.UUID],
    ) -> Batch:
        batch = Batch()
        new_tasks = {task for rows in new_rows for _, task in rows}
        followed: set[uuid.UUID] = set()
        if new_tasks:
            for subscriber in subscribers:
                if subscriber.task_id is not None:
                    matched = {subscriber.task_id} & new_tasks
                else:
                    assert subscriber.tasks is not None
                    matched = set(subscriber.tasks.order_by().filter(pk__in=new_tasks).values_list("pk", flat=True))
                batch.matches[subscriber] = matched
                followed |= matched
        if followed:
            history_ids = [pk for pk, task in new_rows[0] if task in followed]
            output_ids = [pk for pk, task in new_rows[1] if task in followed]
            batch.rows = rows_with_ids(history_ids, output_ids)
        if watched:
            for task, progress in progress_of(watched).items():
                if not progress.same_figures(self.last_progress.get(task)):
                    batch.progress[task] = progress
        return batch

    def _deliver(self, subscribers: list[Subscriber], batch: Batch) -> None:
        events = [row_event(row) for row in batch.rows]
        for task, progress in batch.progress.items():
            self.last_progress[task] = progress
            events.append(progress_event(progress))
        for subscriber in subscribers:
            matched = batch.matches.get(subscriber, set())
            for event in events:
                wanted = event.task_id in matched if event.row is not None else event.task_id in subscriber.watch
                if not wanted:
                    continue
                if event.state and subscriber.task_id is None:
                    self._follow_progress(subscriber, event)
                if not subscriber.put(event):
                    logger.info("a stream client fell %d events behind: closed", subscriber.queue.maxsize)
                    self.unsubscribe(subscriber)
                    break
        watched = self._watched(list(self.subscribers))
        self.last_progress = {task: p for task, p in self.last_progress.items() if task in watched}

    @staticmethod
    def _follow_progress(subscriber: Subscriber, event: Event) -> None:
        """A stream of many tasks is sent the progress of those running."""
        if event.state == TaskState.RUNNING:
            subscriber.watch.add(event.task_id)
        elif is_terminal(event.state):
            subscriber.watch.discard(event.task_id)


hub = Hub()
