"""Live task events: a real uvicorn stream process (and a real worker) on the test database, followed by an SSE
client (httpx) that is cut mid-stream and resumes with Last-Event-ID; the doors of the streams (auth, scoping,
bad ids, filters); the web process's redirect; ``manage.py follow`` against a running task."""

from __future__ import annotations

import io
import itertools
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.models import Task, TaskHistory, TaskOutput
from tasks.selectors.events import Cursor, Frontier, events_after
from tests.api_support import client_for
from tests.processes import ROOT, Processes

pytest_plugins = ["tests.api_support"]


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a text/event-stream answer: {"id", "event", "data"} (comments and bare fields skipped)."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                fields["data"] = json.loads(fields.get("data", "null"))
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


class Stream:
    """The uvicorn stream process on the test database, and a worker when asked."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.base = f"http://127.0.0.1:{processes.port}"
        processes.env.update({"STREAM_POLL_SECONDS": "0.1", "STREAM_KEEPALIVE_SECONDS": "1"})
        processes.start(
            "stream",
            ["uvicorn", "crux.asgi:application", "--host", "127.0.0.1", "--port", str(processes.port)],
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.base}/api/tasks/events", timeout=5)
                return
            except httpx.TransportError:
                assert processes.processes["stream"].poll() is None, processes.log("stream")
                assert time.monotonic() < deadline, "the stream process did not answer within 60 s"
                time.sleep(0.2)

    def worker(self) -> None:
        # The test process publishes to its own broker and this run's queue: the worker consumes them there.
        self.processes.env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
        self.processes.start(
            "worker",
            ["celery", "-A", "crux", "worker", "-c", "1", "--without-gossip", "--without-mingle", "-l", "INFO"],
        )

    def client(self, user: Any | None) -> httpx.Client:
        headers = {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=httpx.Timeout(30))


@pytest.fixture
def stream(tmp_path: Path, private_redis: Any, live_db: Any) -> Iterator[Stream]:
    processes = Processes(tmp_path, private_redis.url)
    try:
        yield Stream(processes)
    finally:
        processes.stop()


def submit(owner: Any, handler: str = "echo", **fields: Any) -> Task:
    return services.submit_task(
        owner=owner, actor=owner, channel=Channel.API, title="streamed", handler=handler, **fields
    )


@pytest.mark.slow
def test_a_follower_cut_mid_stream_resumes_with_last_event_id_and_gets_every_event_once(stream, user, tmp_path):
    stream.worker()
    task = submit(user, "agent_demo", request_payload={"max_iterations": 6, "converge_after": 6, "delay": 0.5})
    follow = subprocess.Popen(
        [sys.executable, "manage.py", "follow", str(task.pk), "--from-start", "--interval", "0.1"],
        cwd=ROOT,
        env=stream.processes.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    received: list[dict[str, Any]] = []
    path = f"/api/tasks/{task.pk}/events"
    with stream.client(user) as client:
        with client.stream("GET", path) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            for event in sse_events(response):
                received.append(event)
                if sum(e["event"] == "output" for e in received) == 2:
                    break  # the client is cut mid-stream
        cut = len(received)
        assert Task.objects.get(pk=task.pk).state == "running", "the cut must fall while the task runs"
        last_id = [e["id"] for e in received if "id" in e][-1]
        with client.stream("GET", path, headers={"Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            received += list(sse_events(response))  # ends by itself once the task has finished

    assert received[-1]["event"] == "end" and received[-1]["data"]["state"] == "completed"
    durable = [e for e in received if "id" in e]
    history = [e["data"]["seq"] for e in durable if e["event"] != "output"]
    outputs = [e["data"]["id"] for e in durable if e["event"] == "output"]
    assert history == list(TaskHistory.objects.filter(task=task).order_by("seq").values_list("seq", flat=True))
    assert outputs == list(TaskOutput.objects.filter(task=task).order_by("id").values_list("id", flat=True))
    assert len(outputs) == 7 and any(e["event"] == "output" for e in received[cut:])
    assert [e["data"]["state_to"] for e in durable if e["event"] == "transition"][-1] == "completed"
    cursors = [Cursor.parse(e["id"]) for e in durable]
    assert all(a.history <= b.history and a.output <= b.output and a != b for a, b in itertools.pairwise(cursors))
    progress = [e["data"]["progress"] for e in received if e["event"] == "progress"]
    assert progress and progress == sorted(progress)
    for one_connection in (received[:cut], received[cut:]):
        figures = [e["data"] for e in one_connection if e["event"] == "progress"]
        assert all(a != b for a, b in itertools.pairwise(figures)), "a connection never repeats the same figures"
    assert all(e["data"]["task"] == str(task.pk) for e in received)

    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    for row in TaskOutput.objects.filter(task=task):
        assert row.content.splitlines()[0] in out
    assert "queued -> running" in out and "running -> completed" in out and "progress" in out
    assert out.rstrip().endswith(f"task {task.pk} completed")


@pytest.mark.slow
def test_the_streams_doors_scoping_and_filters(stream, user, other_user, staff):
    mine = submit(user)
    theirs = submit(other_user)
    with stream.client(None) as anonymous, stream.client(user) as alice, stream.client(staff) as staffer:
        refused = anonymous.get(f"/api/tasks/{mine.pk}/events")
        assert refused.status_code == 401 and "detail" in refused.json()
        assert anonymous.get("/api/tasks/events").status_code == 401
        assert alice.get("/api/tasks/not-a-uuid/events").json() == {"task_id": ["'not-a-uuid' is not a valid UUID."]}
        assert alice.get(f"/api/tasks/{theirs.pk}/events").status_code == 404
        assert alice.get(f"/api/tasks/{uuid.uuid4()}/events").status_code == 404
        bad = alice.get(f"/api/tasks/{mine.pk}/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and "last_event_id" in bad.json()
        assert alice.get("/api/tasks/events?states=done").status_code == 400
        # Staff follow another user's task; cancelled, it has finished: its history, then the end.
        services.cancel(theirs.pk, actor=staff, channel=Channel.API, reason="not needed")
        with staffer.stream("GET", f"/api/tasks/{theirs.pk}/events") as response:
            events = list(sse_events(response))
        assert [e["event"] for e in events] == ["created", "transition", "progress", "end"]
        assert events[-1]["data"] == {"task": str(theirs.pk), "state": "cancelled"}

        # The stream of many tasks with a filter: only the matching tasks' events, live.
        received: list[dict[str, Any]] = []
        with alice.stream("GET", "/api/tasks/events?roles=alpha") as response:
            assert response.status_code == 200
            alpha = services.create_task(owner=user, actor=user, channel=Channel.API, title="a", role="alpha")
            services.create_task(owner=user, actor=user, channel=Channel.API, title="b", role="beta")
            services.create_task(owner=other_user, actor=other_user, channel=Channel.API, title="c", role="alpha")
            services.add_output(alpha.pk, output_type="stdout", content="hello alpha")
            for event in sse_events(response):
                received.append(event)
                if event["event"] == "output":
                    break
        assert [(e["event"], e["data"]["task"]) for e in received] == [
            ("created", str(alpha.pk)),
            ("output", str(alpha.pk)),
        ]
        assert received[1]["data"]["content"] == "hello alpha"
        # Resuming the many-task stream from the first event's id: the output again, nothing before it.
        with alice.stream("GET", f"/api/tasks/events?roles=alpha&last_event_id={received[0]['id']}") as response:
            resumed = next(sse_events(response))
        assert resumed["event"] == "output" and resumed["id"] == received[1]["id"]
    assert "Traceback" not in stream.processes.log("stream")

    # follow on a task that never finishes here (no worker): Ctrl-C stops it cleanly, also when it was started with
    # SIGINT ignored (as a shell starts a background job: ``trap '' INT`` then ``exec``).
    follow = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "manage.py", "follow", str(mine.pk)],
        cwd=ROOT,
        env={**stream.processes.env, "PYTHONFAULTHANDLER": "1"},  # a stack dump if it hangs
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None and follow.stdout.readline().startswith(f"following task {mine.pk}")
    follow.send_signal(signal.SIGINT)
    try:
        out, err = follow.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # where it hangs: faulthandler prints every thread's stack on SIGABRT
        follow.send_signal(signal.SIGABRT)
        out, err = follow.communicate(timeout=30)
        pytest.fail(f"follow still running 30 s after Ctrl-C:\n{out}\n{err}")
    assert follow.returncode == 130 and "follow: stopped" in out and "Traceback" not in err


def test_the_web_process_redirects_streams_to_the_stream_process(db, user, settings):
    settings.STREAM_PUBLIC_URL = "http://streams.example:8001"
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="t")
    client = client_for(user)
    answer = client.get(f"/api/tasks/{task.pk}/events?last_event_id=3-4")
    assert answer.status_code == 307
    assert answer["Location"] == f"http://streams.example:8001/api/tasks/{task.pk}/events?last_event_id=3-4"
    assert answer.json()["stream_url"] == answer["Location"]
    assert client.get("/api/tasks/events?states=running").status_code == 307
    assert client.get("/api/tasks/events?states=done").status_code == 400
    assert client.get("/api/tasks/nope/events").status_code == 400
    assert client_for(None).get("/api/tasks/events").status_code == 401
    settings.STREAM_PUBLIC_URL = ""
    assert client.get("/api/tasks/events").status_code == 404


def test_follow_refuses_an_unknown_or_malformed_id(db):
    for task_id, status, message in ((str(uuid.uuid4()), 1, "no task with id"), ("nope", 2, "is not a valid UUID")):
        with pytest.raises(SystemExit) as exited:
            call_command("follow", task_id, stderr=(err := io.StringIO()))
        assert exited.value.code == status and message in err.getvalue()


def test_the_frontier_holds_rows_after_a_hole_for_the_grace_then_moves_on():
    frontier = Frontier(high=10, grace=1.5)
    assert frontier.take([11, 12, 14, 15], now=100.0) == [11, 12]  # 13 may be a transaction committing late
    assert frontier.take([14, 15], now=101.0) == []
    assert frontier.take([13, 14, 15], now=101.2) == [13, 14, 15]  # it committed: all in order
    assert frontier.take([17], now=102.0) == []
    assert frontier.take([17], now=103.6) == [17]  # 16 never came (rolled back): given up after the grace
    assert frontier.high == 17


def test_a_cursor_is_parsed_strictly():
    assert Cursor.parse("12-7") == Cursor(12, 7) and str(Cursor(12, 7)) == "12-7"
    assert Cursor.parse(None) == Cursor() == Cursor.parse("0-0")
    for bad in ("", "12", "a-b", "-1-2", "1-2-3"):
        with pytest.raises(InvalidTaskData) as refused:
            Cursor.parse(bad)
        assert list(refused.value.errors) == ["last_event_id"]


def test_the_event_source_reads_page_by_page_in_order_with_no_gap_or_duplicate(db, user):
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="paged")
    for i in range(5):
        services.add_output(task.pk, output_type="stdout", content=f"line {i}")
        services.update_task(task.pk, actor=user, channel=Channel.API, reason=f"edit {i}", description=f"d{i}")
    everything, complete = events_after([task.pk], Cursor())
    assert complete and len(everything) == 11
    paged, cursor, complete = [], Cursor(), False
    while not complete:
        rows, complete = events_after([task.pk], cursor, limit=2)
        assert rows
        for row in rows:
            cursor = cursor.after(row)
        paged += rows
    assert paged == everything
    assert [type(r).__name__ for r in everything[:3]] == ["TaskHistory", "TaskOutput", "TaskHistory"]
