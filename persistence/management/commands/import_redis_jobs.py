"""Import the old system's Redis job records into Crux tasks, idempotently."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any
from uuid import UUID

import redis
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.ids import uuid_or_none
from tasks.models import Task
from tasks.redaction import redact, redact_text
from tasks.states import TaskState

JOB_STATES = {
    "pending": TaskState.PENDING,
    "queued": TaskState.PENDING,
    "running": TaskState.INTERRUPTED,  # it was running in the old system; nothing runs it now
    "processing": TaskState.INTERRUPTED,
    "completed": TaskState.COMPLETED,
    "failed": TaskState.FAILED,
    "cancelled": TaskState.CANCELLED,
}
CELERY_STATES = {
    "SUCCESS": TaskState.COMPLETED,
    "FAILURE": TaskState.FAILED,
    "REVOKED": TaskState.CANCELLED,
}


def _text(raw: dict[bytes, bytes], name: str) -> str:
    value = raw.get(name.encode())
    return value.decode("utf-8", "replace") if value is not None else ""


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _when(text: str) -> Any:
    """An ISO timestamp; naive ones (Celery's date_done) are UTC."""
    value = parse_datetime(text) if text else None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def from_job(job_id: UUID, raw: dict[bytes, bytes], meta: dict[str, Any] | None) -> dict[str, Any]:
    """Task fields for a ``job:{id}`` hash (its Celery result fills what the hash lacks)."""
    status = _text(raw, "status").lower()
    if status not in JOB_STATES:
        raise ValueError(f"unknown status {status!r}")
    request = _json(_text(raw, "request"))
    request = request if isinstance(request, dict) else {"request": request} if request is not None else {}
    result = _json(_text(raw, "result"))
    if result is None and meta and meta.get("status") == "SUCCESS":
        result = meta.get("result")
    error = _text(raw, "error") or (meta or {}).get("traceback") or ""
    return {
        "state": JOB_STATES[status],
        "title": str(request.get("title") or request.get("prompt") or f"legacy job {job_id}")[:200],
        "request_payload": redact(request),
        "result": redact(result),
        "partial_results": redact(_json(_text(raw, "partial_results"))),
        "last_error": redact_text(str(error))[:4000],
        "progress": min(1.0, max(0.0, float(_text(raw, "progress") or 0))),
        "current_phase": _text(raw, "current_phase")[:100],
        "created_at": _when(_text(raw, "created_at")),
        "started_at": _when(_text(raw, "started_at")),
        "completed_at": _when(_text(raw, "completed_at")),
        "metadata": {"legacy": {"source": f"job:{job_id}", "mode": _text(raw, "mode")}},
    }


def from_celery_meta(job_id: UUID, meta: dict[str, Any]) -> dict[str, Any]:
    """Task fields for a job whose hash is gone but whose Celery result survived."""
    state = CELERY_STATES.get(str(meta.get("status")), TaskState.INTERRUPTED)
    done = _when(str(meta.get("date_done") or ""))
    return {
        "state": state,
        "title": f"legacy job {job_id}",
        "result": redact(meta.get("result")) if state == TaskState.COMPLETED else None,
        "last_error": redact_text(str(meta.get("traceback") or ""))[:4000],
        "completed_at": done if state != TaskState.INTERRUPTED else None,
        "created_at": done,
        "metadata": {"legacy": {"source": f"celery-task-meta-{job_id}", "status": meta.get("status")}},
    }


class Command(BaseCommand):
    help = (
        "Import the old system's Redis records into Crux tasks: `job:{id}` hashes and, for "
        "jobs whose hash is gone, `celery-task-meta-{id}` results. Each becomes a task with a history row "
        "noting the import; ids are kept, so a second run imports nothing twice. Secrets are redacted. "
        "--dry-run lists what would be imported. Exit status: 0 done, 1 some records could not be "
        "imported (listed), 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="the old Redis, e.g. redis://host:6379/0")
        parser.add_argument("--results-url", help="where the Celery results live, if another database")
        parser.add_argument("--owner", help="username that will own the imported tasks (default: none, staff only)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be imported; write nothing")
        parser.add_argument("--actor", default="ops:import", help="who imports (recorded in history)")

    def handle(self, *args: Any, url: str, results_url: str | None, owner: str | None, dry_run: bool,
               actor: str, **options: Any) -> None:  # fmt: skip
        owner_user = None
        if owner:
            owner_user = get_user_model().objects.filter(username=owner).first()
            if owner_user is None:
                self.stderr.write(f"--owner: no user named {owner!r}")
                raise SystemExit(2)
        try:
            jobs_db = redis.Redis.from_url(url)
            results_db = redis.Redis.from_url(results_url) if results_url else jobs_db
            records = self._collect(jobs_db, results_db)
        except (redis.RedisError, ValueError) as exc:
            self.stderr.write(f"cannot read the old Redis: {exc}")
            raise SystemExit(2) from None
        imported = skipped = 0
        problems: list[str] = []
        for job_id, source, raw, meta in tqdm(records, unit="job", file=self.stderr, disable=dry_run):
            if Task.objects.filter(pk=job_id).exists():
                skipped += 1
                continue
            try:
                fields = from_job(job_id, raw, meta) if raw is not None else from_celery_meta(job_id, meta or {})
            except (ValueError, TypeError) as exc:
                problems.append(f"{source}: {exc}")
                continue
            if dry_run:
                self.stdout.write(f"would import {source} as a {fields['state']} task: {fields['title']}")
                imported += 1
                continue
            try:
                services.import_task(
                    job_id,
                    owner=owner_user,
                    actor=actor,
                    channel=Channel.COMMAND,
                    reason=f"imported from legacy Redis {source}",
                    handler="echo",
                    **{k: v for k, v in fields.items() if v is not None},
                )
            except InvalidTaskData as exc:
                problems.append(f"{source}: {exc}")
                continue
            imported += 1
        for problem in problems:
            self.stderr.write(f"NOT imported {problem}")
        verb = "would import" if dry_run else "imported"
        self.stdout.write(
            f"import_redis_jobs: {verb} {imported}, already present {skipped}, not importable {len(problems)}"
        )
        if problems:
            raise SystemExit(1)

    def _collect(self, jobs_db: redis.Redis, results_db: redis.Redis) -> list[tuple]:
        records: dict[UUID, tuple] = {}
        for key in jobs_db.scan_iter(match="job:*", count=1000):
            job_id = uuid_or_none(key.decode()[4:])
            if job_id is not None and jobs_db.type(key) == b"hash":
                records[job_id] = (job_id, key.decode(), jobs_db.hgetall(key), None)
        for key in results_db.scan_iter(match="celery-task-meta-*", count=1000):
            job_id = uuid_or_none(key.decode()[len("celery-task-meta-") :])
            if job_id is None:
                continue
            stored = results_db.get(key)
            meta = _json(stored.decode("utf-8", "replace") if isinstance(stored, bytes) else stored or "")
            meta = meta if isinstance(meta, dict) else {}
            if job_id in records:
                records[job_id] = (*records[job_id][:3], meta)
            else:
                records[job_id] = (job_id, key.decode(), None, meta)
        return sorted(records.values(), key=lambda r: str(r[0]))
