"""Shared fixtures: real Redis with a per-run key prefix, users, and a private Redis to break."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import redis

# This run's own Redis key prefix, set before Django's settings are read (tests.environment): every process a test
# starts inherits it.
RUN_PREFIX = os.environ["REDIS_KEY_PREFIX"]
# Messages this process publishes go to a queue of this run's own, which no
# developer's worker consumes; the queue is deleted when the run ends.
TEST_QUEUE = f"{RUN_PREFIX}.celery"
# Processes the tests start (web servers, workers, commands) inherit it through the environment.
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = TEST_QUEUE
# Readiness's deadline (HEALTH_TIMEOUT) for tests whose answering parts must answer on a loaded machine: PostgreSQL's
# database check opens a connection each time, which took over the default 0.2 s beside a parallel run (a failing
# database is a 503, before the caller is identified). A part that hangs fails by it whatever it is.
HEALTHY_PARTS_DEADLINE = 0.5


def queue_keys(queue: str = TEST_QUEUE) -> list[str]:
    """The broker's Redis lists of this run's queue (or ``queue``), one per priority step."""
    from persistence import dispatch

    return dispatch.queue_keys(queue)


def queued_count(client: redis.Redis, queue: str = TEST_QUEUE) -> int:
    """Messages waiting in this run's queue (or ``queue``) on a Redis broker, whatever their priority."""
    from persistence import dispatch

    return dispatch.queued_count(client, queue)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_caches(url: str) -> dict:
    from django.conf import settings

    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["LOCATION"] = url
    return caches


@pytest.fixture(autouse=True, scope="session")
def isolated_celery_queue() -> Iterator[None]:
    from django.conf import settings

    from crux.celery import app

    app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE = TEST_QUEUE
    yield
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(conn.scan_iter(match=f"*{TEST_QUEUE}*", count=1000))
    if keys:
        conn.delete(*keys)


@pytest.fixture(autouse=True)
def isolated_redis_keys(settings) -> Iterator[None]:
    """Every test writes under this run's prefix and leaves no key behind."""
    settings.REDIS_KEY_PREFIX = RUN_PREFIX
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield
    conn = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(conn.scan_iter(match=f"{RUN_PREFIX}:*", count=1000))
    if keys:
        conn.delete(*keys)


@pytest.fixture(autouse=True)
def isolated_audit_checkpoints(settings, tmp_path_factory) -> None:
    """Audit checkpoints of the test's own: never a developer's (AUDIT_CHECKPOINT_DIR), nor another test's."""
    settings.AUDIT_CHECKPOINT_DIR = tmp_path_factory.mktemp("checkpoints")


@pytest.fixture
def webhook(settings):
    """A local HTTP server standing for the operators' webhook; the JSON bodies it received."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.DELETE_SPIKE_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_redis(settings) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, on a free port, that the test may flush or kill."""
    server = PrivateRedis()
    settings.CACHES = redis_caches(server.url)
    try:
        yield server
    finally:
        server.stop()


class PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("private redis-server did not start")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server: the crash of the Redis machine, not a polite shutdown."""
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """SIGKILL the server and start a new, empty one on the same port: clients reconnect to the same URL."""
        self.kill()
        self._start()

    def pause(self) -> None:
        """SIGSTOP the server: it still accepts connections (the kernel does) but answers nothing, a hang."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staffer", password="pw-staff-123", is_staff=True)


@pytest.fixture
def make_task(user, django_capture_on_commit_callbacks):
    """Create tasks through the service, running their after-commit mirror writes."""
    from tasks import services
    from tasks.audit import Channel

    def make(**fields):
        fields.setdefault("title", "a task")
        owner = fields.pop("owner", user)
        with django_capture_on_commit_callbacks(execute=True):
            return services.create_task(owner=owner, actor=owner, channel=Channel.API, **fields)

    return make


@pytest.fixture
def live_db(transactional_db):
    """Committed data that other processes (workers, killed children) can see.

    The flush after a transactional test would hit the append-only triggers, so
    the tasks are first erased through the purge hook, the one way past them.
    """
    yield
    from tasks.models import Task
    from tasks.services import erase_tasks

    erase_tasks(list(Task.objects.values_list("pk", flat=True)))


def child_database_url() -> str:
    """A DATABASE_URL naming the test database, for child processes."""
    from django.db import connection

    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    host, port = conf["HOST"] or "127.0.0.1", conf["PORT"] or 5432
    return f"postgres://{conf['USER']}@{host}:{port}/{conf['NAME']}"
