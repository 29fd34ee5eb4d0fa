"""Operator endpoints: health (with a real worker and broken parts), and Prometheus metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from crux.health import run_checks
from tests.api_support import client_for
from tests.conftest import RUN_PREFIX, child_database_url

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
    settings.HEALTH_WORKER_TIMEOUT = 0.5
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
    assert detailed.data["checks"]["database"]["detail"] in ("sqlite", "postgresql")


@pytest.mark.django_db
def test_health_names_redis_broker_and_worker_when_redis_is_down(private_redis: Any, settings: Any, staff: Any) -> None:
    settings.CELERY_BROKER_URL = private_redis.url
    private_redis.kill()
    response = client_for(staff).get("/api/health/")
    assert response.status_code == 503
    assert response.data["status"] == "degraded"
    assert response.data["failing"] == ["redis", "broker", "worker"]
    assert response.data["checks"]["database"]["ok"] is True
    assert "unreachable" in response.data["checks"]["worker"]["detail"]


@pytest.mark.django_db
def test_health_names_the_worker_when_none_answers(private_redis: Any, settings: Any, staff: Any) -> None:
    settings.CELERY_BROKER_URL = private_redis.url
    settings.HEALTH_WORKER_TIMEOUT = 0.3
    response = client_for(staff).get("/api/health/")
    assert response.status_code == 503
    assert response.data["failing"] == ["worker"]
    assert "no worker answered" in response.data["checks"]["worker"]["detail"]


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
