"""``GET /api/tasks/{id}/events`` and ``GET /api/tasks/events``: Server-Sent Events from the ASGI stream process.

Authentication, visibility and the list filters are the API's own (DRF's authenticators, the selectors,
``TaskFilter``), run once on the hub's database thread; errors answer as the API does, in JSON, before the
stream starts. A stream sends what happened after the client's Last-Event-ID (header, or ``last_event_id``
for clients that cannot set headers), then what the hub delivers; every durable event's ``id:`` is the
cursor after it. A task's stream ends (``event: end``) once the task is finished. The web process answers
the same paths with a redirect here (``StreamRedirectView``): streams never hold a sync worker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crux.streams.hub import Event, Subscriber, hub, progress_event, render, row_event
from tasks import selectors
from tasks.api.errors import crux_exception_handler, error_responses
from tasks.api.filters import TaskFilter
from tasks.api.schema import TASK_ID
from tasks.audit import signed_in
from tasks.ids import parse_task_id
from tasks.models import TaskHistory, TaskQuerySet
from tasks.selectors.events import Cursor, events_after, progress_of
from tasks.states import TaskState, is_terminal

LAST_EVENT_ID = "last_event_id"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Refused(Exception):
    """An answer given instead of the stream (401, 403, 404, 400, 503), already rendered."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response


def refusal(exc: Exception) -> Refused:
    """The API's answer to ``exc`` (crux_exception_handler), as JSON; not signed in is 401 with the challenge."""
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response = JsonResponse({"detail": str(exc.detail)}, status=status.HTTP_401_UNAUTHORIZED)
        response["WWW-Authenticate"] = "Token"
        return Refused(response)
    answer = crux_exception_handler(exc, {})
    if answer is None:
        raise exc
    response = JsonResponse(answer.data, status=answer.status_code, safe=False)
    for header in ("Retry-After", "WWW-Authenticate"):
        if header in answer:
            response[header] = answer[header]
    return Refused(response)


def _signed_in_user(request: HttpRequest) -> tuple[User, Request]:
    """The user as the API authenticates them (token header or session), or NotAuthenticated."""
    api_request = Request(request, authenticators=[cls() for cls in APIView.authentication_classes])
    if not api_request.user or not api_request.user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return signed_in(api_request.user), api_request


def _last_event_id(request: HttpRequest) -> Cursor:
    """The client's cursor: the Last-Event-ID header, else ``last_event_id``; neither is the start."""
    header = request.headers.get("Last-Event-ID")
    return Cursor.parse(header if header is not None else request.GET.get(LAST_EVENT_ID))


@dataclass
class Opening:
    """What a stream sends before the hub's events: the backlog of ``source`` (tasks) after ``cursor`` up to
    ``upto`` (the hub's frontier when it subscribed), read page by page; then ``progress``; whether it ended."""

    cursor: Cursor
    upto: Cursor
    source: list[uuid.UUID] | TaskQuerySet | None
    progress: list[Event]
    finished_state: str = ""


def _open_task(request: HttpRequest, task_id: str) -> tuple[uuid.UUID, Cursor]:
    """The task's id if the user may see it, and where the client resumes."""
    try:
        user, _ = _signed_in_user(request)
        task = selectors.find_visible_task(user, task_id)
        return task.pk, _last_event_id(request)
    except Exception as exc:
        raise refusal(exc) from None


def _task_opening(task_id: uuid.UUID, cursor: Cursor, upto: Cursor) -> Opening:
    """The task's backlog and progress; finished if its last history row is final and read before or in it."""
    last = TaskHistory.objects.filter(task_id=task_id).order_by("-pk").values_list("pk", "state_to").first()
    progress = [progress_event(p) for p in progress_of([task_id]).values()]
    finished = last is not None and last[0] <= max(cursor.history, upto.history) and is_terminal(last[1])
    return Opening(cursor, upto, [task_id], progress, last[1] if finished and last else "")


def _open_tasks(request: HttpRequest) -> tuple[TaskQuerySet, Cursor | None, set[uuid.UUID]]:
    """The tasks the user may see that pass the list filters, the client's cursor (None: only what comes next),
    and those running now (whose progress is sent)."""
    try:
        user, api_request = _signed_in_user(request)
        resumed = "Last-Event-ID" in request.headers or LAST_EVENT_ID in request.GET
        cursor = _last_event_id(request) if resumed else None
        filters = TaskFilter(request.GET, queryset=selectors.task_list(user), request=api_request)
        if not filters.is_valid():
            raise exceptions.ValidationError(filters.errors)
        tasks = cast(TaskQuerySet, filters.qs)
        running = set(tasks.order_by().filter(state=TaskState.RUNNING).values_list("pk", flat=True)[:1000])
        return tasks, cursor, running
    except Exception as exc:
        raise refusal(exc) from None


def _tasks_opening(tasks: TaskQuerySet, cursor: Cursor | None, upto: Cursor, running: set[uuid.UUID]) -> Opening:
    progress = [progress_event(p) for p in progress_of(running).values()]
    return Opening(cursor or upto, upto, tasks if cursor is not None else None, progress)


def _backlog_page(source: list[uuid.UUID] | TaskQuerySet, cursor: Cursor, upto: Cursor) -> tuple[list[Event], bool]:
    rows, complete = events_after(source, cursor, upto)
    return [row_event(row) for row in rows], complete


def _sse(event: Event, cursor: Cursor) -> bytes:
    head = f"id: {cursor}\n".encode() if event.row is not None else b""
    return head + event.body + b"\n"


async def _events(subscriber: Subscriber, opening: Opening) -> AsyncIterator[bytes]:
    """The backlog, then the hub's events, each once (a row at or before the cursor was sent already)."""
    cursor = opening.cursor
    finished = opening.finished_state
    progress_sent: dict[uuid.UUID, bytes] = {}

    def once(event: Event) -> bytes | None:
        nonlocal cursor, finished
        if event.row is not None:
            if cursor.covers(event.row):
                return None
            cursor = cursor.after(event.row)
            if subscriber.task_id is not None and event.state:
                finished = event.state if is_terminal(event.state) else ""
        elif progress_sent.get(event.task_id) == event.body:
            return None  # the opening's figures, read again by the hub's next poll
        else:
            progress_sent[event.task_id] = event.body
        return _sse(event, cursor)

    try:
        yield b"retry: 2000\n\n"
        complete = opening.source is None
        while not complete:
            assert opening.source is not None
            page, complete = await hub.run_sync(_backlog_page, opening.source, cursor, opening.upto)
            for chunk in map(once, page):
                if chunk:
                    yield chunk
        queued: Sequence[Event] = opening.progress
        while True:
            for chunk in map(once, queued):
                if chunk:
                    yield chunk
            if finished:
                yield render("end", {"task": str(subscriber.task_id), "state": finished}) + b"\n"
                return
            if subscriber.overflowed and subscriber.queue.empty():
                return  # too slow: the client reconnects with the last id it got
            try:
                first = await asyncio.wait_for(subscriber.queue.get(), settings.STREAM_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                queued = []
                continue
            queued = [first]
            while not subscriber.queue.empty():
                queued.append(subscriber.queue.get_nowait())
    finally:
        hub.unsubscribe(subscriber)


def _stream(subscriber: Subscriber, opening: Opening) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_events(subscriber, opening), content_type="text/event-stream")
    for header, value in HEADERS.items():
        response[header] = value
    return response


async def task_events(request: HttpRequest, task_id: str) -> HttpResponseBase:
    """One task's events; ends when it is finished."""
    try:
        pk, cursor = await hub.run_sync(_open_task, request, task_id)
    except Refused as refused:
        return refused.response
    subscriber = Subscriber(task_id=pk, watch={pk})
    upto = await hub.subscribe(subscriber)
    try:
        opening = await hub.run_sync(_task_opening, pk, cursor, upto)
    except BaseException:
        hub.unsubscribe(subscriber)
        raise
    return _stream(subscriber, opening)


async def tasks_events(request: HttpRequest) -> HttpResponseBase:
    """The events of every task the user may see (staff: all) that passes the list filters; never ends."""
    try:
        tasks, cursor, running = await hub.run_sync(_open_tasks, request)
    except Refused as refused:
        return refused.response
    subscriber = Subscriber(tasks=tasks, watch=running)
    upto = await hub.subscribe(subscriber)
    try:
        opening = await hub.run_sync(_tasks_opening, tasks, cursor, upto, running)
    except BaseException:
        hub.unsubscribe(subscriber)
        raise
    return _stream(subscriber, opening)


# --- The web (WSGI) process: the same paths answer with a redirect to the stream process, and are documented.

EVENT_STREAM = {
    "type": "string",
    "description": "Server-Sent Events. Each event: `id: <history id>-<output id>` (durable events: send it back "
    "as Last-Event-ID to resume with no gap and no duplicate), `event: <name>`, `data: <JSON>`. Names: a history "
    "event (`created`, `transition`, `edit`, `soft_delete`, `restore`, `unarchive`; data: the history row as "
    "GET /api/tasks/history/{task_id} shows it, plus `task`), `output` (the output as GET "
    "/api/tasks/outputs/{task_id} shows it, plus `task`), `progress` (`task`, `state`, `progress`, `phase`, "
    "`updated_at`; no id: the latest figures, not every step), `end` (a task's stream: it finished; `task`, "
    "`state`). A comment line `: keep-alive` every STREAM_KEEPALIVE_SECONDS.",
}
REDIRECT = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "stream_url": {"type": "string", "format": "uri"}},
    "required": ["detail", "stream_url"],
}
# The Last-Event-ID header is described, not declared: the web process only redirects, and the client sends
# the header again to the stream process, which checks it (400 naming last_event_id).
STREAM_PARAMETERS = [
    OpenApiParameter(
        LAST_EVENT_ID,
        {"type": "string", "pattern": r"^\d{1,18}-\d{1,18}$"},
        OpenApiParameter.QUERY,
        description="Resume after this event id (`<history id>-<output id>`, as the stream sent it). Clients "
        "that can set headers send the standard `Last-Event-ID` header instead (it wins over this parameter).",
    ),
]


def _responses(*codes: int) -> dict[int | tuple[int, str], OpenApiResponse]:
    responses: dict[int | tuple[int, str], OpenApiResponse] = {
        (200, "text/event-stream"): OpenApiResponse(EVENT_STREAM, description="The stream (stream process)."),
        (307, "application/json"): OpenApiResponse(
            REDIRECT,
            description="Answered by the web process: the stream process's URL (Location; STREAM_PUBLIC_URL). "
            "Call it directly: clients drop Authorization on a redirect to another port.",
        ),
    }
    for code, response in error_responses(*codes).items():
        responses[code] = response
    return responses


class StreamRedirectView(APIView):
    """The web process's answer on the stream paths: a 307 to the stream process, after the cheap checks."""

    def get(self, request: Request, task_id: str | None = None) -> Response:
        if task_id is not None:
            parse_task_id(task_id)
        else:
            filters = TaskFilter(request.query_params, queryset=selectors.task_list(signed_in(request.user)))
            if not filters.is_valid():
                raise exceptions.ValidationError(filters.errors)
        # The query's cursor travels with the redirect; the header is sent again by the client, and checked there.
        Cursor.parse(request.query_params.get(LAST_EVENT_ID))
        base = settings.STREAM_PUBLIC_URL.rstrip("/")
        if not base:
            return Response(
                {"detail": "Event streams are served by the stream process: route this path to it."},
                status=status.HTTP_404_NOT_FOUND,
            )
        url = base + request.get_full_path()
        body = {
            "detail": "Event streams are served by the stream process: call stream_url directly.",
            "stream_url": url,
        }
        return Response(body, status=status.HTTP_307_TEMPORARY_REDIRECT, headers={"Location": url})


class TaskEventsRedirectView(StreamRedirectView):
    @extend_schema(
        operation_id="task_events",
        summary="Follow a task's events (Server-Sent Events)",
        description="Every history row, output and progress change of the task, in order, as it commits: from "
        "its first event, or after Last-Event-ID. The stream ends with `event: end` when the task is finished. "
        "Served by the stream process (ASGI, "
        "STREAM_PORT); the web process answers 307 to it.",
        parameters=[TASK_ID, *STREAM_PARAMETERS],
        responses=_responses(400, 404),
    )
    def get(self, request: Request, task_id: str | None = None) -> Response:
        return super().get(request, task_id)


class TasksEventsRedirectView(StreamRedirectView):
    @extend_schema(
        operation_id="tasks_events",
        summary="Follow the events of many tasks (Server-Sent Events)",
        description="The events of your tasks (staff: all) that pass the list filters of GET /api/tasks/, as "
        "they commit; never ends. Without Last-Event-ID it starts with what comes next. Served by the stream "
        "process; the web process answers 307 to it.",
        parameters=[*STREAM_PARAMETERS],
        responses=_responses(400, 403),
    )
    def get(self, request: Request, task_id: str | None = None) -> Response:
        return super().get(request)
