"""No secret is stored, logged, exported or backed up, through any channel (DESIGN.md invariant 10).

Some fifty credential shapes (``tests.credentials``) are sent through every channel:
the API of a real gunicorn web server (submit, outputs, reasons of cancel, delete,
restore and recover, query strings that must be refused, a path that carries a
token), the admin (add form with its reason, a confirmed action), a management
command (``import_redis_jobs``) and a real Celery worker whose handler writes them
as progress, outputs, metrics, log lines, stdout, its result and its error. Then
every store is searched: every SQL table (read raw, whatever model it belongs
to), every Redis key of the run, the logs of the web and worker processes, a JSON
and a CSV export and a backup. A marker sent with the secrets proves each channel
reached its store (so the secrets were masked there, not lost on the way).
"""

from __future__ import annotations

import gzip
import io
import json
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tasks import services
from tasks.audit import Channel
from tasks.models import CompressedTextField, Task
from tasks.redaction import REDACTED
from tasks.states import TERMINAL_STATES
from tests.api_support import grant
from tests.conftest import RUN_PREFIX
from tests.credentials import SHAPES, leaks, redis_dump
from tests.processes import Processes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

ALL_SHAPES = "\n".join(text for _, text, _ in SHAPES)


def reason_groups(limit: int = 480) -> list[str]:
    """The shapes in groups that fit a reason field (500 characters), every shape in one group."""
    groups = [""]
    for _, text, _ in SHAPES:
        if len(groups[-1]) + len(text) + 1 > limit:
            groups.append("")
        groups[-1] += text + "\n"
    return groups


@pytest.fixture
def processes(tmp_path: Path, private_redis: Any, live_db: Any) -> Iterator[Processes]:
    running = Processes(tmp_path, private_redis.url)
    yield running
    running.stop()


class Api:
    """JSON requests to the real web server with a user's token."""

    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def wait_until_finished(ids: list[str], processes: Processes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while Task.objects.filter(pk__in=ids).exclude(state__in=TERMINAL_STATES).exists():
        assert time.monotonic() < deadline, processes.log("worker")[-4000:]
        time.sleep(0.2)


def sql_dump() -> str:
    """Every row of every table of the database, read raw (whatever model, app or library owns it), an output's
    content held as bytes (compressed, or PostgreSQL's UTF-8) as the text it is."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows.append(f"{table}: {[tuple(map(expanded, row)) for row in cursor.fetchall()]!r}")
    return "\n".join(rows)


def expanded(value: Any) -> Any:
    """Bytes that hold an output's content (compressed, or PostgreSQL's UTF-8) as its text; any other value as it
    is."""
    if isinstance(value, bytes | memoryview):
        try:
            return CompressedTextField().from_db_value(value, None, connection)
        except (zlib.error, UnicodeDecodeError):
            return value
    return value


def test_no_secret_is_stored_logged_exported_or_backed_up(
    processes: Processes, private_redis: Any, tmp_path: Path, settings: Any, user: Any
) -> None:
    token = Token.objects.create(user=grant(user, "soft_delete_task", "restore_task", "recover_task")).key
    processes.start("web", ["gunicorn", "crux.wsgi", "-c", "python:crux.gunicorn_conf"])
    processes.start(
        "worker", ["celery", "-A", "crux", "worker", "-c", "1", "--without-gossip", "--without-mingle", "-l", "INFO"]
    )
    processes.wait_for_web()
    api = Api(processes.port, token)
    reasons = reason_groups()

    # The API, through the web server: a submission in every field, an output, reasons in bodies.
    status, ok = api(
        "POST",
        "/api/tasks/",
        {
            "title": f"marker-api-submit {SHAPES[7][1]}",
            "description": ALL_SHAPES,
            "repository_url": SHAPES[25][1],
            "handler": "leak",
            "payload": {"marker": "marker-worker-ok", "notes": ALL_SHAPES, "api_key": "Zr8Tq3Wm6Yp1"},
            "metadata": {"doc": ALL_SHAPES, "client_secret": "Qm9vLXNlY3JldC12YWx1ZQ"},
            "acceptance_criteria": {"login": {"password": "Hunter2-Correct-Horse"}, "doc": ALL_SHAPES},
        },
    )
    assert status == 201, ok
    failing_payload = {"marker": "marker-worker-fail", "fail": True}
    status, failing = api("POST", "/api/v1/solve", {"title": "legacy", "handler": "leak", "request": failing_payload})
    assert status == 201, failing
    status, _ = api("POST", f"/api/tasks/outputs/{ok['id']}", {"output_type": "log", "content": ALL_SHAPES})
    assert status == 201

    # The admin: a task added with a reason, then an action confirmed with a reason.
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", "root@localhost", "pw-root-123"))
    added = admin.post(
        reverse("admin:tasks_task_add"),
        {
            "title": "marker-admin",
            "description": ALL_SHAPES,
            "handler": "echo",
            "target_dir": ".",
            "max_attempts": 3,
            "acceptance_criteria": "{}",
            "metadata": json.dumps({"token": "Kx7Lp2Vn9Qr4Ts1W", "doc": ALL_SHAPES}),
            "change_reason": reasons[0],
        },
    )
    assert added.status_code == 302
    by_admin = Task.objects.get(title="marker-admin")
    confirmed = admin.post(
        reverse("admin:tasks_task_confirm", args=["cancel"]),
        {"ids": [by_admin.pk], "reason": reasons[1], "confirm": "yes"},
    )
    assert confirmed.status_code == 302 and Task.objects.get(pk=by_admin.pk).state == "cancelled"
    pending = services.create_task(owner=user, actor=user, channel=Channel.API, title="to cancel")
    for method, path, reason in (
        ("POST", f"/api/tasks/{pending.pk}/cancel?confirm=true", reasons[2]),
        ("DELETE", f"/api/tasks/{pending.pk}?confirm=true", reasons[3]),
        ("POST", f"/api/tasks/{pending.pk}/restore", reasons[4]),
    ):
        status, body = api(method, path, {"reason": reason})
        assert status == 200, (path, body)

    # Credentials in a URL are refused; a token in a path is logged masked.
    for path in (
        f"/api/tasks/{ok['id']}/cancel?confirm=true&reason={SHAPES[14][2]}",
        f"/api/tasks/?token={SHAPES[8][2]}",
        f"/api/tasks/persistent?search={SHAPES[17][2]}",
    ):
        status, body = api("POST" if "cancel" in path else "GET", path)
        assert status == 400 and len(body) == 1, (path, body)
    assert api("GET", f"/api/tasks/{SHAPES[9][2]}")[0] == 400

    # A command: the old system's Redis jobs imported.
    legacy_url = private_redis.url.rsplit("/", 1)[0] + "/1"
    legacy = redis.Redis.from_url(legacy_url)
    legacy.hset(
        f"job:{uuid.uuid4()}",
        mapping={
            "status": "failed",
            "request": json.dumps({"title": "marker-import", "prompt": ALL_SHAPES, "api_key": "Zr8Tq3Wm6Yp1"}),
            "error": f"Traceback (most recent call last):\nRuntimeError: {ALL_SHAPES}",
            "created_at": "2025-01-01T00:00:00+00:00",
        },
    )
    call_command(
        "import_redis_jobs", "--url", legacy_url, "--owner", "alice", stdout=io.StringIO(), stderr=io.StringIO()
    )
    legacy.flushdb()  # the source, not a store of ours

    # The worker: the first task completes, the legacy one fails, is recovered with a reason and fails again.
    wait_until_finished([ok["id"], failing["job_id"]], processes)
    status, body = api("POST", f"/api/tasks/{failing['job_id']}/recover", {"reason": reasons[5]})
    assert status == 200, body
    wait_until_finished([ok["id"], failing["job_id"]], processes)
    assert Task.objects.get(pk=ok["id"]).state == "completed"
    assert Task.objects.get(pk=failing["job_id"]).state == "failed"

    # Exports and a backup.
    exports = tmp_path / "export.json", tmp_path / "export.csv"
    for path in exports:
        call_command("export", "--format", path.suffix[1:], "--output", str(path), "--include-deleted", "--no-progress")
    settings.BACKUP_DIR = tmp_path / "backups"
    call_command("backup", "--format", "json", stdout=io.StringIO())
    if connection.vendor == "sqlite":
        call_command("backup", "--format", "sqlite", stdout=io.StringIO())
    processes.stop()

    stores = {
        "sql": sql_dump(),
        "redis": "\n".join(
            redis_dump(private_redis.client, "*")
            + redis_dump(redis.Redis.from_url(settings.REDIS_URL), f"{RUN_PREFIX}:*")
        ),
        "web log": processes.log("web"),
        "worker log": processes.log("worker"),
        **{path.name: path.read_text() for path in exports},
        **{
            path.name: (gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_bytes().decode("latin-1"))
            for path in settings.BACKUP_DIR.glob("crux-backup-*")
            if not path.name.endswith(".sha256")
        },
    }
    assert len(stores) >= 7
    for store, text in stores.items():
        assert leaks(text) == [], store
        for plain in ("Zr8Tq3Wm6Yp1", "Hunter2-Correct-Horse", "Kx7Lp2Vn9Qr4Ts1W", "Qm9vLXNlY3JldC12YWx1ZQ"):
            assert plain not in text, (store, plain)

    # Each channel reached its store: what was masked was really there.
    for marker in ("marker-api-submit", "marker-worker-ok", "marker-worker-fail", "marker-admin", "marker-import"):
        assert marker in stores["sql"], marker
    assert stores["sql"].count(REDACTED) > 10 * len(SHAPES)
    assert "handler log: marker-worker-ok" in stores["worker log"] and "handler stdout" in stores["worker log"]
    assert "marker-worker-fail" in stores["worker log"] and REDACTED in stores["worker log"]
    assert "succeeded in" in stores["worker log"]  # Celery's own task lines went through the same handler
    assert '"GET /api/tasks/ HTTP/1.1" 400' in stores["web log"]  # the access log, without its query string
    assert f"Bad Request: /api/tasks/{REDACTED}" in stores["web log"]  # Django's request log, masked
    assert all("marker-api-submit" in stores[path.name] for path in exports)
