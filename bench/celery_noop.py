"""A bare Celery app with one no-op task: the baseline of the drain benchmark (``bench.drain``).

    celery -A bench.celery_noop worker -Q <queue> -c N   # started by bench.drain, never by the application

No Django, no database, no result backend: what a bare Celery no-op drain is.
Delivery is configured as Crux's workers are (late acks, prefetch multiplier 1,
JSON), so both drains take messages from the broker the same way. Each run of
the task appends the time it ran to the Redis list ``BENCH_NOOP_KEY``: the
drain is over when the list holds one entry per message published.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

# Not the current app: in the benchmark process, the application's shared tasks must keep binding to Crux's app.
app = Celery("bench_noop", broker=os.environ.get("CELERY_BROKER_URL"), set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
_client: redis.Redis | None = None


@app.task(name="bench.noop")
def noop(**submission: Any) -> None:
    """Do nothing but record when it ran (one round trip), so the drain can be timed from outside."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    _client.rpush(os.environ["BENCH_NOOP_KEY"], time.time())
