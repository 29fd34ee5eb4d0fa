"""Completed tasks as Crux itself writes them: the data set ``bench.scale`` and ``bench.storage_floor`` measure
storage on.

Each task is submitted through the submit service, as the API's POST submits one (its row and its created
history row, in one commit), then run through Celery's tracer in this process (``bench.traced``), as a worker's
pool process runs it: the claim, the handler (``mix``: two output lines, its metrics, a small result) and the
outcome (a completion writes no Celery result row: Celery reads it from the task). So every row a task leaves,
and every byte of it, is the real writer's: the history rows' details (each change's before and after, the
submitted values), the outputs batched as a worker batches them. The content is drawn as ``bench.dataset``'s
tasks draw theirs (its words, roles and providers), the same content for the same seed.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bench.dataset import PROVIDERS, ROLES, WORDS
from bench.traced import traced_worker

HANDLER = "bench_mix"
HANDLER_SETTING = f"{HANDLER}=bench.written.mix"  # TASK_HANDLERS_EXTRA of the process that runs the tasks
OUTPUTS = 2
BATCH = 500


def mix(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """An agent run of the storage mix: two output lines, its figures and a small result, drawn from the task's
    own seed (the payload's)."""
    rng = random.Random(payload["seed"])
    for i in range(OUTPUTS):
        ctx.output("stdout" if i == 0 else "log", f"step {i}: " + " ".join(rng.choices(WORDS, k=12)))
    prompt, completion = rng.randint(500, 9000), rng.randint(200, 6000)
    ctx.metrics(
        iterations=rng.randint(1, 5),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        stop_reason="evaluator_stop",
        converged=True,
    )
    return {"answer": rng.getrandbits(64), "converged": True}


def build(count: int, run: Callable[[Sequence[Any]], None], *, seed: int = 1) -> None:
    """Submit ``count`` tasks of ``mix`` (owned by five users, as ``bench.dataset``'s) and run each to its end
    with ``run`` (``bench.traced.traced_worker``'s)."""
    from django.contrib.auth import get_user_model
    from tqdm import tqdm

    from tasks import services
    from tasks.audit import Channel
    from tasks.models import Task

    rng = random.Random(seed)
    users = [get_user_model().objects.get_or_create(username=f"bench{i}")[0] for i in range(5)]

    def submitted(index: int) -> Any:
        words = rng.sample(WORDS, 3)
        user = rng.choice(users)
        return services.submit_task(
            owner=user,
            actor=user,
            channel=Channel.API,
            title=f"{words[0]} {words[1]} task",
            description=f"Make the {words[0]} {words[2]} flow work for {rng.choice(WORDS)} users.",
            role=rng.choice(ROLES),
            provider=rng.choice(PROVIDERS),
            model="model-x",
            handler=HANDLER,
            request_payload={"prompt": " ".join(words), "max_iterations": 3, "seed": seed * 10**9 + index},
            metadata={"source": "bench"},
        ).pk

    with tqdm(total=count, unit="task", desc="submitting and running", file=sys.stderr) as bar:
        for start in range(0, count, BATCH):
            ids = [submitted(index) for index in range(start, min(count, start + BATCH))]
            run(list(Task.objects.filter(pk__in=ids).order_by("created_at")))
            bar.update(len(ids))


def database(count: int) -> str:
    return f"crux_bench_written_{count}"


@contextmanager
def written_tasks(engine: str, count: int, *, fresh: bool = False) -> Iterator[None]:
    """Point Django at the data set of ``count`` written tasks on ``engine``, built first if it is missing (or
    ``fresh``); Redis keys of the run are deleted on leaving."""
    os.environ["TASK_HANDLERS_EXTRA"] = ",".join(filter(None, (os.environ.get("TASK_HANDLERS_EXTRA"), HANDLER_SETTING)))
    with traced_worker(engine, database(count), hostname="celery@bench-1", name="written", fresh=fresh) as run:
        from tasks.models import Task

        existing = Task.objects.count()
        if existing != count:
            if existing:
                raise SystemExit(f"{database(count)} holds {existing} tasks, not {count}: run with --fresh")
            build(count, run)
            compact()
        yield


def compact() -> None:
    """Rewrite the database's tables and indexes without the free space the order of the writes left in their
    pages (SQLite's VACUUM, PostgreSQL's VACUUM FULL), as a bulk load with indexes built at its end leaves them:
    what the rows take, measured the same way as ever, whatever order the tasks arrived in."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM" if connection.vendor == "sqlite" else "VACUUM FULL")
