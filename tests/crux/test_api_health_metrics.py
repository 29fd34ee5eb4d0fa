"""Operator endpoints: health (with a real worker and broken parts), and Prometheus metrics."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from crux.health import run_checks
from tasks.models import Task
from tests.api_support import client_for
from tests.conftest import HEALTHY_PARTS_DEADLINE, RUN_PREFIX, child_database_url, redis_caches

pytest_plugins = ["tests.api_support"]

ROOT = Path(__file__).resolve().parents[2]
CELERY_WORKER = [
    *(sys.executable, "-m", "celery", "-A", "crux", "worker"),
    *("-P", "solo", "--without-gossip", "--without-mingle", "-l", "WARNING"),
]


# --- Health.


@pytest.fixture
def worker(live_db: Any, private_redis: Any, settings: Any, tmp_path: Path) -> Iterator[str]:
    """A real Celery worker on a private broker (which settings now name); yields its node name once it answers."""
    name = f"health-{uuid.uuid4().hex[:6]}@localhost"
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "REDIS_URL": private_redis.url,
        "CELERY_BROKER_URL": private_redis.url,
        "REDIS_KEY_PREFIX": RUN_PREFIX,
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CELERY_WORKER, "-n", name],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    settings.CELERY_BROKER_URL = private_redis.url
    try:
        deadline = time.monotonic() + 60
        while not run_checks()["checks"]["worker"]["ok"]:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        yield name
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_health_is_200_when_every_part_answers(worker: str, staff: Any) -> None:
    anonymous = APIClient().get("/api/health/")
    assert anonymous.status_code == 200, anonymous.data
    assert anonymous.data == {
        "status": "ok",
        "failing": [],
        "checks": {part: {"ok": True} for part in ("database", "redis", "broker", "worker")},
    }
    detailed = client_for(staff).get("/api/health/")
    assert detailed.status_code == 200
    assert worker in detailed.data["checks"]["worker"]["workers"]
    assert detailed.data["checks"]["database"]["detail"].startswith(("sqlite: writable", "postgresql: writable"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readiness_answers_within_300_ms_as_soon_as_a_worker_answers(worker: str, staff: Any) -> None:
    """With the default deadline (HEALTH_TIMEOUT, 0.2 s). A loaded machine may miss it once: then degraded, in time."""
    client = client_for(staff)
    timings, answers = [], []
    for _ in range(5):
        response, took = timed_get(client, "/api/health/ready")
        timings.append(took)
        answers.append(response)
    print(f"readiness with a worker answering: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    assert max(timings) < 1.0  # generous, for a loaded machine
    assert all(r.status_code == 200 for r in answers), [r.data for r in answers]
    in_time = [r for r, took in zip(answers, timings, strict=True) if took < 0.3 and r.data["status"] == "ok"]
    assert in_time, [r.data for r in answers]
    assert all(r.data["checks"]["worker"]["workers"] == [worker] for r in in_time)


@pytest.mark.django_db
def test_health_names_redis_broker_and_worker_when_redis_is_down(private_redis: Any, settings: Any, staff: Any) -> None:
    """Degraded, still ready: tasks are accepted (SQL is the outbox and the mirror is rebuilt from it)."""
    settings.CELERY_BROKER_URL = private_redis.url
    settings.HEALTH_TIMEOUT = 1.0  # what fails is the subject here, not how fast: room for a loaded machine
    private_redis.kill()
    response = APIClient().get("/api/health/")
    assert response.status_code == 200
    assert response.data["status"] == "degraded"
    assert response.data["failing"] == ["redis", "broker", "worker"]
    assert response.data["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_health_names_the_worker_when_none_answers(private_redis: Any, settings: Any, staff: Any) -> None:
    settings.CELERY_BROKER_URL = private_redis.url
    settings.HEALTH_TIMEOUT = 1.0
    response = client_for(staff).get("/api/health/")
    assert (response.status_code, response.data["status"]) == (200, "degraded")
    assert response.data["failing"] == ["worker"]
    assert "no worker answered" in response.data["checks"]["worker"]["detail"]


def timed_get(client: APIClient, path: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = client.get(path)
    return response, time.perf_counter() - started


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/health/", "/api/health/ready"])
def test_readiness_names_a_hanging_broker_within_its_deadline(
    path: str, hanging_server: Any, private_redis: Any, settings: Any, staff: Any
) -> None:
    """A broker that accepts connections and never answers: degraded in time, again and again, one probe at a
    time (still ready: submissions wait in SQL for the broker)."""
    settings.CELERY_BROKER_URL = hanging_server.url
    # The probe waits up to 5 s for the broker's answer: every request below comes while it still waits.
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_timeout": 5}
    settings.HEALTH_TIMEOUT = HEALTHY_PARTS_DEADLINE
    client = client_for(staff)
    for attempt in range(3):
        response, took = timed_get(client, path)
        print(f"readiness with a hanging broker, answer {attempt + 1}: {took * 1000:.0f} ms")
        assert took < 1.5  # the deadline, generously for a loaded machine
        assert (response.status_code, response.data["status"]) == (200, "degraded")
        assert {"broker", "worker"} <= set(response.data["failing"])
        assert "no answer within" in response.data["checks"]["broker"]["detail"]
        assert response.data["checks"]["worker"]["detail"].startswith("not checked: the broker did not answer")
    assert len(hanging_server.accepted) == 1  # the hanging probe was not started again for each request


@pytest.mark.django_db
def test_readiness_names_a_hanging_redis_within_its_deadline(
    hanging_server: Any, private_redis: Any, settings: Any
) -> None:
    settings.CELERY_BROKER_URL = private_redis.url  # a broker that answers (with no worker)
    settings.CACHES = redis_caches(hanging_server.url)
    settings.HEALTH_TIMEOUT = HEALTHY_PARTS_DEADLINE
    response, took = timed_get(APIClient(), "/api/health/ready")
    print(f"readiness with a hanging Redis: {took * 1000:.0f} ms")
    assert took < 1.5
    assert (response.status_code, response.data["status"]) == (200, "degraded")
    assert "redis" in response.data["failing"] and "broker" not in response.data["failing"]


@contextmanager
def write_lock_held_elsewhere() -> Iterator[None]:
    """Another session holds the database's write lock: SQLite's (BEGIN IMMEDIATE), or PostgreSQL's on the tasks."""
    from django.db import connection

    holder: Any
    if connection.vendor == "sqlite":
        holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = psycopg.connect(child_database_url(), autocommit=False)
        holder.execute(f"LOCK TABLE {Task._meta.db_table} IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def test_readiness_notices_a_database_that_cannot_write(private_redis: Any, settings: Any, staff: Any, live_db: Any):
    settings.CELERY_BROKER_URL = private_redis.url
    settings.HEALTH_TIMEOUT = 0.5
    client = client_for(staff)
    with write_lock_held_elsewhere():
        response, took = timed_get(client, "/api/health/ready")
    print(f"readiness with the database's write lock held elsewhere: {took * 1000:.0f} ms")
    assert took < 1.5
    assert (response.status_code, response.data["status"]) == (503, "unavailable")
    assert response["Retry-After"] == str(settings.API_RETRY_AFTER_SECONDS)
    assert response.data["failing"] == ["database", "worker"]
    assert "detail" not in response.data["checks"]["database"]  # no token lookup on a failing database
    # The lock released: writable again, once the check started under the lock has given up
    # (a check still waiting is not started again; it gives up by its request's deadline).
    time.sleep(settings.HEALTH_TIMEOUT)
    again = client.get("/api/health/ready")
    assert (again.status_code, again.data["status"], again.data["failing"]) == (200, "degraded", ["worker"])


def test_readiness_notices_a_read_only_postgresql(private_redis: Any, settings: Any, live_db: Any) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    settings.CELERY_BROKER_URL = private_redis.url
    settings.HEALTH_TIMEOUT = 1.0
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {connection.settings_dict['NAME']} SET default_transaction_read_only = on")
    try:
        response = APIClient().get("/api/health/ready")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {connection.settings_dict['NAME']} RESET default_transaction_read_only")
    assert (response.status_code, response.data["status"]) == (503, "unavailable")
    assert response.data["failing"] == ["database", "worker"]


@pytest.mark.django_db
def test_liveness_checks_no_dependency(hanging_server: Any, settings: Any, staff: Any, django_assert_num_queries: Any):
    settings.CELERY_BROKER_URL = hanging_server.url
    settings.CACHES = redis_caches(hanging_server.url)
    for client in (APIClient(), client_for(staff)):
        with django_assert_num_queries(0):
            response = client.get("/api/health/live")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    assert hanging_server.accepted == []


# --- Metrics.


def scrape(client: APIClient, **headers: str) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.django_db
def test_metrics_count_tasks_from_sql(staff_perm: Any, user: Any, task_in: Any) -> None:
    client = client_for(staff_perm)
    before = scrape(client)
    task_in("running")
    task_in("failed", deleted=True)
    interrupted = task_in("interrupted")
    client.post(f"/api/tasks/{interrupted.pk}/recover")
    client_for(user).post("/api/tasks/", {"title": "t"}, format="json")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert after["crux_tasks", (("state", "running"),)] == 1
    assert after["crux_tasks", (("state", "queued"),)] == 2  # the recovered task and the submission
    assert after["crux_tasks", (("state", "failed"),)] == 0  # the failed one is in the trash
    assert after["crux_tasks_deleted", ()] == 1
    assert delta("crux_task_submissions_total", channel="api") == 4
    assert delta("crux_task_deletions_total", channel="api") == 1
    assert delta("crux_task_transitions_total", state="running", channel="system") == 3
    assert delta("crux_task_recoveries_total", state="queued", channel="api") == 1


@pytest.mark.django_db
def test_metrics_expose_mirror_failures(staff: Any, task_in: Any, settings: Any, private_redis: Any) -> None:
    client = client_for(staff)
    task = task_in("running")
    key = ("crux_mirror_failures_total", (("operation", "read"),))
    before = scrape(client).get(key, 0)
    private_redis.kill()
    assert client.get(f"/api/tasks/{task.pk}/status").status_code == 200  # served from SQL
    assert scrape(client)[key] == before + 1


@pytest.mark.django_db
def test_metrics_accept_a_bearer_token_from_settings(settings: Any, user: Any) -> None:
    anonymous = APIClient()
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 401  # no token set
    settings.METRICS_TOKEN = "scrape-me-" + uuid.uuid4().hex
    assert scrape(anonymous, HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client_for(user).get("/metrics").status_code == 403


@pytest.mark.django_db
def test_metrics_answer_a_plain_text_accept_header(staff: Any) -> None:
    assert scrape(client_for(staff), HTTP_ACCEPT="text/plain")
