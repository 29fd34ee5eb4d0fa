"""Tasks run as a worker's pool process runs them, in this process: Celery's own tracer, no broker round trip.

``traced_worker`` points Django at a benchmark database and yields a function that runs tasks already submitted,
each through ``celery.app.trace.build_tracer`` (the code a pool process runs for a delivery: prerun, the task, its
result, postrun), so every row a task leaves is the one a worker writes. Publishes go to queues named with a
token of the run, which no worker listens to; those queues and the run's mirror keys are deleted afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bench.dataset import configure
from bench.redis_keys import delete_keys

if TYPE_CHECKING:
    from tasks.models import Task

BROKER_URL = "redis://127.0.0.1:6379/11"


@contextmanager
def traced_worker(
    engine: str, database: str, *, hostname: str, name: str, fresh: bool = True
) -> Iterator[Callable[[Sequence[Task]], None]]:
    """Configure ``database`` of ``engine`` (``bench.dataset.configure``) with this run's broker and mirror prefix,
    and yield the runner of tasks as worker ``hostname``; ``name`` makes the run's token."""
    token = f"crux-bench-{name}-{os.getpid()}"
    os.environ.update(CELERY_BROKER_URL=BROKER_URL, REDIS_KEY_PREFIX=token)
    configure(engine, database, fresh=fresh)
    import redis
    from celery.app.trace import build_tracer

    from crux.celery import app
    from persistence import mirror
    from tasks.dispatch import EXECUTE_TASK

    app.conf.task_default_queue = f"{token}.celery"  # no worker listens: the tracer runs the tasks here
    app.loader.import_default_modules()
    tracer = build_tracer(EXECUTE_TASK, app.tasks[EXECUTE_TASK], app=app, hostname=hostname, eager=False)

    def run(tasks: Sequence[Task]) -> None:
        for task in tasks:
            request = {
                "id": task.celery_task_id, "task": EXECUTE_TASK, "hostname": hostname,
                "argsrepr": repr((str(task.pk),)), "kwargsrepr": "{}", "is_eager": False,
                "delivery_info": {"routing_key": "celery", "priority": 5, "redelivered": False},
            }  # fmt: skip
            tracer(task.celery_task_id, (str(task.pk),), {}, request)  # type: ignore[arg-type]  # stubs: a list only

    try:
        yield run
    finally:
        delete_keys(redis.Redis.from_url(BROKER_URL), token)
        delete_keys(mirror.client(), token)
