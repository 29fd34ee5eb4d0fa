"""Prometheus done right: counters that never go back (summed over every process, kept through purges), what
operators watch, and the shipped alert rules and Grafana dashboard, checked with Prometheus' own promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from crux.management.commands.clear_metrics import clear_dead_process_files
from retention.breaker import admit_deletion
from retention.models import DeletionKind, PurgedHistoryCount, RetentionPolicy
from retention.services import purge, record_audit_verification, unarchive_task
from tasks import checkpoints, services
from tasks.audit import Channel, audited
from tasks.models import Task
from tests.api_support import client_for
from tests.processes import WebServer
from tests.tasks.test_worker import ROOT, Cluster, wait_until_finished

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (`make promtool` installs Debian's prometheus package)"
)
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "crux-dashboard.json"
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def parse(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape_text(client: Any) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return response.content.decode()


def counters(samples: dict[tuple[str, tuple], float]) -> dict[tuple[str, tuple], float]:
    """The samples of counters and histograms: values that may never go back."""
    return {key: value for key, value in samples.items() if key[0].endswith(COUNTER_SUFFIXES)}


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60)


# --- Counters from history survive purges; the gauges operators watch.


@pytest.fixture
def purgeable(settings: Any, tmp_path: Path) -> Any:
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100
    RetentionPolicy.objects.update_or_create(scope="completed", defaults={"keep_days": 1})
    return settings


def finished(make_task: Any, days_ago: int = 10) -> Task:
    task = make_task()
    for step in ("queued", "running", "completed"):
        services.transition(task.pk, step, actor="system:test", channel=Channel.WORKER, reason=step)
    task = Task.objects.get(pk=task.pk)
    task.completed_at = timezone.now() - timedelta(days=days_ago)
    with audited("system:test", channel=Channel.SYSTEM, reason="age the task for the test"):
        task.save()
    return task


@pytest.mark.django_db
@pytest.mark.parametrize("tallied", [False, True], ids=["rows-grouped", "rows-tallied"])
def test_history_counters_never_go_back_through_a_purge_and_an_unarchive(
    make_task: Any, staff: Any, user: Any, purgeable: Any, tallied: bool
) -> None:
    """Whether the history rows are still above the tally's mark (grouped at the scrape) or under it (counted in
    the tally, which the purge's erase and the unarchive's reinstate keep)."""
    client = client_for(staff)
    old = [finished(make_task) for _ in range(3)]
    if tallied:
        assert services.advance_history_tally() == sum(task.history.count() for task in old)
    before = parse(scrape_text(client))
    assert purge(actor="ops:test", channel=Channel.COMMAND, confirm=True).purged == 3
    after_purge = parse(scrape_text(client))
    for key, n in counters(before).items():
        assert after_purge.get(key, 0) >= n, key
    # Exactly what was there: the purged rows are counted, not lost and not counted twice.
    for name, labels in [
        ("crux_task_submissions_total", {"channel": "api"}),
        ("crux_task_transitions_total", {"state": "completed", "channel": "worker"}),
        ("crux_task_transitions_total", {"state": "running", "channel": "worker"}),
    ]:
        assert value(after_purge, name, **labels) == value(before, name, **labels) >= 3
    assert value(after_purge, "crux_tasks", state="completed") == value(before, "crux_tasks", state="completed") - 3
    assert value(after_purge, "crux_purge_last_timestamp_seconds") >= time.time() - 60

    # An unarchived task's rows are back in SQL and leave the purged counts: still nothing counted twice.
    assert unarchive_task(old[0].pk, actor=user, channel=Channel.API).outcome == "restored"
    after_restore = parse(scrape_text(client))
    assert counters(after_restore) == counters(after_purge)
    assert sum(PurgedHistoryCount.objects.values_list("count", flat=True)) == 2 * old[0].history.count() - 2


@pytest.mark.django_db
def test_operators_see_queues_workers_breaker_and_the_audit_trail(
    make_task: Any, staff: Any, settings: Any, tmp_path: Path
) -> None:
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "checkpoints"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 1
    client = client_for(staff)
    waiting = make_task()
    services.transition(waiting.pk, "queued", actor="system:test", channel=Channel.SYSTEM, reason="queue it")
    waiting = Task.objects.get(pk=waiting.pk)
    waiting.dispatched_at = timezone.now() - timedelta(minutes=5)
    with audited("system:test", channel=Channel.SYSTEM, reason="as if published five minutes ago"):
        waiting.save()
    samples = parse(scrape_text(client))
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert value(samples, "crux_queue_tasks", queue=queue, status="waiting") == 1
    assert value(samples, "crux_queue_oldest_age_seconds", queue=queue) >= 300
    assert value(samples, "crux_queue_workers", queue=queue) == 0
    assert value(samples, "crux_deletion_breaker_tripped") == 0
    assert ("crux_audit_chain_ok", ()) not in samples  # never verified yet

    assert record_audit_verification().problems == 0
    assert value(parse(scrape_text(client)), "crux_audit_chain_ok") == 1
    # A task removed whole, without a tombstone, after a checkpoint saw it: the next verification says so.
    checkpoints.write_checkpoint()
    services.erase_tasks([waiting.pk])
    assert record_audit_verification().problems > 0
    samples = parse(scrape_text(client))
    assert value(samples, "crux_audit_chain_ok") == 0 and value(samples, "crux_audit_verification_problems") > 0

    admit_deletion(kind=DeletionKind.SOFT_DELETE, actor="a", channel=Channel.API)
    with pytest.raises(Exception, match="deletion spike"):
        admit_deletion(kind=DeletionKind.SOFT_DELETE, actor="a", channel=Channel.API)
    assert value(parse(scrape_text(client)), "crux_deletion_breaker_tripped") == 1


def test_release_clears_files_of_ended_processes_only(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"counter_{int(ended.stdout)}.db"
    live = tmp_path / f"counter_{os.getpid()}.db"
    for file in (gone, live):
        file.write_bytes(b"")
    assert clear_dead_process_files(tmp_path) == [gone]
    assert live.exists() and not gone.exists()


# --- The shipped alert rules and dashboard.


def names_used() -> set[str]:
    """Every crux_* metric the alert rules and the dashboard's queries name."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    text = RULES.read_text() + "\n".join(queries)
    return set(re.findall(r"\bcrux_[a-z_]+\b", text))


def exposed_names(text: str) -> set[str]:
    """The series names a scrape declares, a family without samples yet included (a counter no process has
    incremented: its HELP and TYPE are there)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name, *(family.name + suffix for suffix in suffixes.get(family.type, ()))}
    return names


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = RULES.read_text()
    for alert in ("CruxWorkerGone", "CruxQueueAgeHigh", "CruxDeletionBreakerTripped", "CruxBackupStale"):
        assert f"alert: {alert}" in rules
    assert "alert: CruxAuditChainBroken" in rules


# --- Two gunicorn processes, a worker, a purge: the acceptance test of issue 17.


def published_by_process(directory: Path) -> dict[str, float]:
    """crux_published_total as each process's own file holds it."""
    found = {}
    for file in directory.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(file)]):
            for sample in family.samples:
                if sample.name == "crux_published_total" and sample.value:
                    found[file.stem.rpartition("_")[2]] = sample.value
    return found


@pytest.fixture
def cluster(tmp_path: Path, private_redis: Any, live_db: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, private_redis.url)
    cluster.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_two_gunicorn_processes_serve_one_truth_and_a_purge_lowers_no_counter(
    cluster: Cluster, staff: Any, settings: Any, tmp_path: Path
) -> None:
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100
    RetentionPolicy.objects.update_or_create(scope="completed", defaults={"keep_days": 0})
    metrics_dir = Path(cluster.env["PROMETHEUS_MULTIPROC_DIR"])
    token = Token.objects.create(user=staff).key
    web = WebServer(cluster.env, tmp_path / "web.log")
    try:
        cluster.worker(2)
        web.wait()
        ids: list[str] = []
        with ThreadPoolExecutor(4) as pool:  # concurrent requests: both gunicorn workers serve some
            for _ in range(10):
                bodies = [{"title": f"metrics {len(ids) + i}", "handler": "echo"} for i in range(8)]
                for status, body in pool.map(lambda b: web.request("/api/tasks/", token, b), bodies):
                    assert status == 201
                    ids.append(json.loads(body)["id"])
                if len(published_by_process(metrics_dir)) >= 2:
                    break
        publishers = published_by_process(metrics_dir)
        assert len(publishers) >= 2, f"one gunicorn process served every submission: {publishers}"
        wait_until_finished(ids, cluster, timeout=120)

        def scrapes(n: int) -> list[str]:
            with ThreadPoolExecutor(4) as pool:
                return [body.decode() for _, body in pool.map(lambda _: web.request("/metrics", token), range(n))]

        before = [parse(text) for text in scrapes(6)]
        # Whichever process answers, the counters are the same (each used to report its own publishes).
        assert all(counters(s) == counters(before[0]) for s in before), "scrapes of the processes differ"
        total_publishes = sum(Task.objects.filter(pk__in=ids).values_list("dispatch_count", flat=True))
        assert value(before[0], "crux_published_total") == total_publishes == len(ids)
        assert value(before[0], "crux_published_total") == sum(published_by_process(metrics_dir).values())
        attempts = value(
            before[0], "crux_task_duration_seconds_count", handler="echo", queue=_queue(settings), outcome="completed"
        )
        assert attempts == len(ids)

        call_command("purge", "--confirm", "--limit", "100", stdout=open(os.devnull, "w"))
        assert not Task.objects.filter(pk__in=ids).exists(), "the purge removed the tasks"

        after_texts = scrapes(6)
    finally:
        web.stop()
    for text in after_texts:
        after = parse(text)
        lower = {key: (n, after.get(key)) for key, n in counters(before[0]).items() if after.get(key, 0) < n}
        assert not lower, f"counters went back after the purge: {lower}"
        assert value(after, "crux_published_total") == total_publishes
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (`make promtool` installs Debian's prometheus package)")
    checked = promtool("check", "metrics", stdin=after_texts[0])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert names_used() - exposed_names(after_texts[0]) == set(), "the rules or the dashboard use unexposed metrics"


def _queue(settings: Any) -> str:
    return settings.CELERY_TASK_DEFAULT_QUEUE
