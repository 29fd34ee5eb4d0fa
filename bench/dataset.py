"""Build large, realistic task data sets fast, for benchmarks only.

Tasks are inserted in bulk with their complete, correctly chained history (so
``verify_audit`` passes on them), a few outputs and metrics. This deliberately
goes around the one-task-at-a-time service door, which is what a benchmark
fixture needs and what the application never does.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIFECYCLES: dict[str, list[str]] = {
    "pending": ["pending"],
    "queued": ["pending", "queued"],
    "running": ["pending", "queued", "running"],
    "completed": ["pending", "queued", "running", "completed"],
    "failed": ["pending", "queued", "running", "failed"],
    "cancelled": ["pending", "queued", "cancelled"],
    "interrupted": ["pending", "queued", "running", "interrupted"],
}
ROLES = ["backend", "frontend", "devops", "research", "qa"]
PROVIDERS = ["claude", "openai", "gemini", "local"]
WORDS = "login cache billing search export import report parser retry queue index upload audit".split()


def configure(engine: str, name: str, *, fresh: bool = True) -> str:
    """Point Django at a benchmark database of ``engine`` (emptied unless ``fresh`` is False)."""
    if engine == "sqlite":
        path = ROOT / "var" / "bench" / f"{name}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    elif engine == "postgres":
        import psycopg

        base = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if fresh or not exists:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
    else:
        raise SystemExit(f"unknown engine {engine!r}: use sqlite or postgres")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
    os.environ.setdefault("REDIS_KEY_PREFIX", f"crux-bench-{os.getpid()}")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


REALISTIC_MIX = {"completed": 0.7, "failed": 0.1, "cancelled": 0.05, "queued": 0.08, "running": 0.05, "pending": 0.02}


def ensure(count: int, mix: dict[str, float] = REALISTIC_MIX) -> None:
    """Build the data set unless this database already holds it (tasks plus those purged since)."""
    from retention.models import PurgeLedger
    from tasks.models import Task

    existing = Task.objects.count() + PurgeLedger.objects.count()
    if existing == count:
        return
    if existing:
        raise SystemExit(f"the benchmark database holds {existing} tasks, not {count}: run with --fresh")
    build(count, mix)


def build(count: int, mix: dict[str, float], *, seed: int = 1, batch_size: int = 2000, outputs: int = 2) -> None:
    """Insert ``count`` tasks whose states follow ``mix`` (weights), with history, outputs and metrics."""
    from django.contrib.auth import get_user_model
    from django.db import models, transaction
    from django.utils import timezone
    from tqdm import tqdm

    from tasks.models import Task, TaskHistory, TaskMetrics, TaskOutput

    rng = random.Random(seed)
    users = [get_user_model().objects.get_or_create(username=f"bench{i}")[0] for i in range(5)]
    states, weights = zip(*mix.items(), strict=True)
    now = timezone.now()
    with tqdm(total=count, unit="task", desc="building", file=sys.stderr) as bar:
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            tasks, rows, outs, metrics = [], [], [], []
            for _ in range(size):
                state = rng.choices(states, weights)[0]
                task, history = _task(rng, state, rng.choice(users), now)
                tasks.append(task)
                rows.extend(history)
                if state in ("completed", "failed"):
                    outs.extend(_outputs(rng, task, outputs))
                if state == "completed":
                    metrics.append(_metrics(rng, task))
            with transaction.atomic():
                models.QuerySet.bulk_create(Task.objects.all(), tasks)
                TaskHistory.objects.bulk_create(rows)
                TaskOutput.objects.bulk_create(outs)
                TaskMetrics.objects.bulk_create(metrics)
            bar.update(size)


def _task(rng: random.Random, state: str, owner, now: datetime):
    from tasks.audit import GENESIS_HASH, row_hash
    from tasks.models import Task, TaskHistory

    created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
    words = rng.sample(WORDS, 3)
    task = Task(
        id=uuid.UUID(int=rng.getrandbits(128), version=4),
        title=f"{words[0]} {words[1]} task",
        description=f"Make the {words[0]} {words[2]} flow work for {rng.choice(WORDS)} users.",
        role=rng.choice(ROLES),
        provider=rng.choice(PROVIDERS),
        model="model-x",
        state=state,
        owner=owner,
        created_at=created,
        request_payload={"prompt": " ".join(words), "max_iterations": 3},
        metadata={"source": "bench"},
        max_attempts=3,
    )
    history = []
    prev = GENESIS_HASH
    at = created
    path = LIFECYCLES[state]
    for seq, step in enumerate(path, start=1):
        at = at + timedelta(seconds=rng.uniform(0.01, 30))
        changes = {"title": task.title, "state": step} if seq == 1 else {"state": [path[seq - 2], step]}
        row = {
            "task_id": task.id,
            "seq": seq,
            "event": "created" if seq == 1 else "transition",
            "state_from": "" if seq == 1 else path[seq - 2],
            "state_to": step,
            "actor": owner.username if seq == 1 else "system:worker",
            "actor_user_id": owner.pk if seq == 1 else None,
            "channel": "api" if seq == 1 else "worker",
            "reason": "submitted" if seq == 1 else f"moved to {step}",
            "error_message": "RuntimeError: bench failure" if step == "failed" else "",
            "details": {"changes": changes},
            "created_at": at,
        }
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(prev, row)
        history.append(TaskHistory(**row))
        if step == "running":
            task.started_at = at
            task.attempt_count = 1
            task.worker_id = "celery@bench:1"
            task.lease_expires_at = now + timedelta(hours=1)
        if step == "queued":
            # live queued tasks were just dispatched, so the re-dispatch sweep leaves them alone
            task.dispatched_at, task.dispatch_count = (now if state == "queued" else at), 1
    if state in ("completed", "failed", "cancelled"):
        task.completed_at = at
        task.lease_expires_at = None
        task.progress = 1.0 if state == "completed" else task.progress
    if state == "completed":
        task.result = {"answer": rng.getrandbits(64), "converged": True}
    if state == "failed":
        task.last_error, task.error_count = "RuntimeError: bench failure", 1
    task.updated_at = at
    task.history_count, task.history_head = len(history), prev
    return task, history


def _outputs(rng: random.Random, task, count: int) -> Iterator:
    from tasks.models import TaskOutput

    for i in range(count):
        yield TaskOutput(
            task=task,
            output_type="stdout" if i == 0 else "log",
            content=f"step {i}: " + " ".join(rng.choices(WORDS, k=12)),
            created_at=task.updated_at,
        )


def _metrics(rng: random.Random, task):
    from tasks.models import TaskMetrics

    prompt, completion = rng.randint(500, 9000), rng.randint(200, 6000)
    return TaskMetrics(
        task=task,
        processing_time_seconds=rng.uniform(1, 300),
        iterations=rng.randint(1, 5),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        stop_reason="evaluator_stop",
        converged=True,
    )


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"
