"""GET /api/persistence/stats: counts, sizes, mirror consistency, last recovery and backup, with Redis down too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from persistence import mirror
from tasks import services
from tasks.audit import Channel
from tests.api_support import client_for

pytest_plugins = ["tests.api_support"]


@pytest.mark.django_db
def test_stats_counts_sizes_and_mirror_consistency(
    staff: Any, user: Any, task_in: Any, settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    settings.BACKUP_DIR = tmp_path  # no backup yet
    with django_capture_on_commit_callbacks(execute=True):  # the after-commit mirror writes run
        tasks = [
            task_in("running", role="backend", provider="claude"),
            task_in("queued", role="backend", provider="openai"),
            task_in("completed", role="frontend", provider="claude"),
            task_in("failed", role="", provider="claude"),
        ]
        services.soft_delete(tasks[2].pk, user=user, channel=Channel.API, reason="test")
    client = client_for(staff)
    stats = client.get("/api/persistence/stats").data

    assert stats["tasks"]["total"] == 4 and stats["tasks"]["alive"] == 3 and stats["tasks"]["deleted"] == 1
    assert stats["tasks"]["by_state"] == {
        "pending": 0,
        "queued": 1,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "interrupted": 0,
    }
    assert stats["tasks"]["by_role"] == {"": 1, "backend": 2}
    assert stats["tasks"]["by_provider"] == {"claude": 2, "openai": 1}
    assert stats["history"]["total"] == sum(t.history.count() for t in tasks)
    assert stats["deletions_last_hour"] == 1
    assert stats["last_backup_at"] is None and stats["last_recovery_at"] is None
    database = stats["database"]
    assert database["size_bytes"] > 0
    if database["index_share"] is not None:
        assert 0 < database["index_bytes"] < database["size_bytes"] and 0 < database["index_share"] < 1
    assert stats["mirror"] == {
        "available": True,
        "checked": 4,
        "matching": 4,
        "missing": 0,
        "stale": 0,
        "orphan": 0,
        "consistency": 1.0,
    }

    conn = redis.Redis.from_url(settings.REDIS_URL)
    stale = json.loads(conn.get(mirror.task_key(tasks[0].pk)))
    stale["state"] = "completed"
    conn.set(mirror.task_key(tasks[0].pk), json.dumps(stale))
    conn.delete(mirror.task_key(tasks[1].pk))
    drifted = client.get("/api/persistence/stats").data["mirror"]
    assert (drifted["matching"], drifted["missing"], drifted["stale"], drifted["consistency"]) == (2, 1, 1, 0.5)


@pytest.mark.django_db
def test_stats_report_the_last_recovery_and_backup(staff: Any, task_in: Any, settings: Any, tmp_path: Path) -> None:
    from persistence.backup import backup

    settings.BACKUP_DIR = tmp_path
    task = task_in("running")
    services.transition(task.pk, "interrupted", actor=services.RECOVERY_ACTOR, channel=Channel.RECOVERY, reason="t")
    recovered_at = task.history.order_by("-seq").first().created_at
    backup(fmt="json")
    stats = client_for(staff).get("/api/persistence/stats").data
    assert stats["last_recovery_at"] == recovered_at.isoformat().replace("+00:00", "Z")
    assert stats["last_backup_at"] is not None


@pytest.mark.django_db
def test_stats_with_redis_down_still_answer(staff: Any, task_in: Any, private_redis: Any) -> None:
    task_in("running")
    private_redis.kill()
    response = client_for(staff).get("/api/persistence/stats")
    assert response.status_code == 200
    assert response.data["mirror"]["available"] is False and response.data["mirror"]["consistency"] is None
    assert response.data["tasks"]["alive"] == 1
