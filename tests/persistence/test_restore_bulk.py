"""A JSON backup restores in bulk (rows converted by forked processes, inserted many per statement), exactly."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from persistence.backup import FORMAT, backup, load_backup, row_counts
from tasks import services
from tasks.audit import GENESIS_HASH
from tasks.models import METRIC_FIELDS, Task, TaskHistory, TaskOutput
from tasks.records import encode
from tasks.selectors import verify_audit_chains
from tests.persistence.test_backup import drop_everything, seed

MODELS = (Task, TaskHistory, TaskOutput, Token)


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    return settings.BACKUP_DIR


def rows_of_every_model() -> dict[str, list[dict]]:
    return {model.__name__: list(model._base_manager.order_by("pk").values()) for model in MODELS}


def test_rows_come_back_exactly_across_batches_and_models(live_db, user):
    """Batches of 3 lines cut through runs of one model; ``auto_now`` stamps (updated_at, Token.created) keep their
    value, history chains verify."""
    seed(user)
    Token.objects.create(user=user)
    before = rows_of_every_model()
    path = backup("json").path
    drop_everything()
    with gzip.open(path, "rt", encoding="utf-8") as lines, transaction.atomic():
        next(lines)
        assert services.load_rows(lines, batch_size=3) > len(before["TaskHistory"])
    assert rows_of_every_model() == before
    assert list(verify_audit_chains()) == []


def older_backup(path: Path, older: Path, model: str, add: Callable[[dict], None]) -> Path:
    """``path`` rewritten at ``older`` as a backup of an earlier schema: ``add`` gives each row of ``model`` the
    fields it then held."""
    with gzip.open(path, "rt", encoding="utf-8") as source:
        lines = source.read().splitlines()
    for i, line in enumerate(lines[1:], start=1):
        row = json.loads(line)
        if row.get("model") == model:
            add(row)
            lines[i] = encode(row)
    with gzip.open(older, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return older


def test_a_backup_from_before_prev_hash_was_derived_restores_and_verifies(live_db, user, tmp_path):
    """Older backups (and purge archives) hold each history row's prev_hash: dropped on the way in, derived since."""
    seed(user)
    before = rows_of_every_model()
    previous: dict[str, str] = {}

    def add_prev_hash(row: dict) -> None:
        fields = row["fields"]
        fields["prev_hash"] = previous.get(fields["task"], GENESIS_HASH)
        previous[fields["task"]] = fields["hash"]

    older = older_backup(
        backup("json").path, tmp_path / "crux-backup-older.jsonl.gz", "tasks.taskhistory", add_prev_hash
    )
    assert previous, "the backup holds history rows"
    drop_everything()
    assert load_backup(older) > 0
    assert rows_of_every_model() == before
    assert list(verify_audit_chains()) == []


def test_a_backup_from_when_tasks_stored_their_celery_id_restores_it_derived(live_db, user, tmp_path):
    """Older backups (and purge archives) hold each task's Celery id of its latest publish: dropped on the way in,
    derived since from the id and the publish count, to the same value."""
    seed(user)
    before = rows_of_every_model()
    stored = {str(task.pk): task.celery_task_id for task in Task.objects.all()}
    assert any(stored.values()) and all(name == "" or name.endswith(".1") for name in stored.values())
    older = older_backup(
        backup("json").path,
        tmp_path / "crux-backup-celery-ids.jsonl.gz",
        "tasks.task",
        lambda row: row["fields"].update(celery_task_id=stored[row["pk"]]),
    )
    drop_everything()
    assert load_backup(older) > 0
    assert rows_of_every_model() == before
    assert {str(task.pk): task.celery_task_id for task in Task.objects.all()} == stored


def older_backup_with_a_metrics_table(path, tmp_path, **extra_fields) -> tuple[Path, int]:
    """``path`` rewritten as a backup of the schema before migration 0017: each task's figures in a row of the
    retired metrics model (after every task row, as that backup's model order put them); how many such rows."""
    with gzip.open(path, "rt", encoding="utf-8") as source:
        lines = source.read().splitlines()
    metrics_rows = []
    for i, line in enumerate(lines[1:], start=1):
        row = json.loads(line)
        if row.get("model") == "tasks.task":
            figures = {name: row["fields"].pop(name) for name in METRIC_FIELDS}
            if any(value not in (None, "") for value in figures.values()):
                fields = {**figures, "updated_at": "2026-01-01T00:00:00+00:00", **extra_fields}
                metrics_rows.append(encode({"model": "tasks.taskmetrics", "pk": row["pk"], "fields": fields}))
            lines[i] = encode(row)
    last_task = max(i for i, line in enumerate(lines) if json.loads(line).get("model") == "tasks.task")
    lines[last_task + 1 : last_task + 1] = metrics_rows
    older = tmp_path / "crux-backup-metrics-table.jsonl.gz"
    with gzip.open(older, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return older, len(metrics_rows)


def test_a_backup_from_when_metrics_had_their_own_table_restores_them_into_the_task_rows(live_db, user, tmp_path):
    seed(user)
    before = rows_of_every_model()
    assert sum(task["processing_time_seconds"] is not None for task in before["Task"]) == 3
    older, moved = older_backup_with_a_metrics_table(backup("json").path, tmp_path)
    assert moved == 3
    drop_everything()
    assert load_backup(older) > 0
    assert rows_of_every_model() == before
    assert list(verify_audit_chains()) == []


def test_a_retired_metrics_row_with_a_field_it_never_had_is_refused_and_nothing_is_written(live_db, user, tmp_path):
    seed(user)
    older, _ = older_backup_with_a_metrics_table(backup("json").path, tmp_path, no_such_figure=1)
    drop_everything()
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("restore", str(older), stdout=StringIO(), stderr=err)
    assert "no_such_figure" in err.getvalue() and "nothing restored" in err.getvalue()
    assert Task.objects.count() == TaskHistory.objects.count() == 0


def test_a_row_this_schema_does_not_know_is_refused_and_nothing_is_written(live_db, user, tmp_path):
    seed(user)
    path = backup("json").path
    with gzip.open(path, "rt", encoding="utf-8") as source:
        lines = source.read().splitlines()
    task_line = next(i for i, line in enumerate(lines) if json.loads(line).get("model") == "tasks.task")
    row = json.loads(lines[task_line])
    row["fields"]["no_such_column"] = 1
    lines[task_line] = encode(row)
    edited = tmp_path / "crux-backup-edited.jsonl.gz"
    with gzip.open(edited, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    assert json.loads(lines[0])["format"] == FORMAT
    drop_everything()
    err = StringIO()
    with pytest.raises(SystemExit) as exit_status:
        call_command("restore", str(edited), stdout=StringIO(), stderr=err)
    assert exit_status.value.code == 1
    assert "no_such_column" in err.getvalue() and "nothing restored" in err.getvalue()
    assert Task.objects.count() == TaskHistory.objects.count() == 0


def last_analyze() -> dict[str, object]:
    """When each table was last analysed by hand (autovacuum's own runs are ``last_autoanalyze``)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT relname, last_analyze FROM pg_stat_user_tables")
        return dict(cursor.fetchall())


def test_a_restore_on_postgresql_leaves_every_table_it_loaded_with_statistics(live_db, user):
    """Without them the planner guesses at fresh tables until autovacuum comes (never, where it is off), and what
    runs next (verify_audit first) pays for the guesses."""
    if connection.vendor != "postgresql":
        pytest.skip("the restore analyses its tables on PostgreSQL only")
    seed(user)
    path = backup("json").path
    drop_everything()
    before = last_analyze()
    load_backup(path)
    after = last_analyze()
    tables = row_counts().keys()
    assert not [table for table in tables if after[table] is None or after[table] == before[table]]
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'tasks_task'")
        assert cursor.fetchone()[0] == Task.objects.count()
