"""Live streams under load: 200 followers on the ASGI stream process, delivery latency and the cost to submits.

    python -m bench.stream --engine sqlite
    python -m bench.stream --engine postgres --followers 200 --rate 50 --duration 10 --rounds 2

Starts the web process (gunicorn, crux/gunicorn_conf.py) and the stream process (uvicorn crux.asgi) on a
benchmark database, with 200 tasks. Each round measures, interleaved:

- submit alone: ``POST /api/tasks/`` with wrk (8 connections) while a committer writes events through the
  services at ``--rate`` per second (outputs, and every fifth an edit of the task: a history row), no follower
  connected;
- the same, while 200 followers (httpx, async, one connection each) follow one task each over
  ``GET /api/tasks/{id}/events``. Each event names a marker; delivery latency is the time a follower received
  it minus the time its transaction had committed (same clock).

Goals: delivery p99 < 1 s; submit throughput with followers >= 0.80 of submit alone (a drop under 20 %).
Every committed event must reach its follower exactly once (checked; a loss or a duplicate fails the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.dataset import ROOT, configure, git_revision
from bench.http import SUBMIT_LUA, wrk
from bench.redis_keys import clear_private_broker
from bench.report import record, summary

BROKER_URL = "redis://127.0.0.1:6379/13"


def wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without a token)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer") from None
            time.sleep(0.2)


def commit_events(task_ids: list[uuid.UUID], rate: float, duration: float, commits: dict[str, float], tag: str) -> None:
    """Events through the services, one every 1/rate s, round-robin over the tasks; commit time per marker."""
    from django.db import connection

    from tasks import services
    from tasks.audit import Channel

    started = time.monotonic()
    n = 0
    try:
        while time.monotonic() - started < duration:
            marker = f"bench-{tag}-{n}"
            task_id = task_ids[n % len(task_ids)]
            if n % 5 == 4:
                services.update_task(
                    task_id, actor="system:bench", channel=Channel.SYSTEM, reason=marker, description=marker
                )
            else:
                services.add_output(task_id, output_type="log", content=marker)
            commits[marker] = time.time()
            n += 1
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
    finally:
        connection.close()


def submit_under_writes(
    submit: dict[str, Any], task_ids: list[uuid.UUID], rate: float, commits: dict[str, float]
) -> dict[str, Any]:
    """The submit load while events are committed: both phases carry the same writes, followers or not."""
    # Markers of this run only: a follower's opening replays the task's earlier events (no Last-Event-ID).
    tag = uuid.uuid4().hex[:8]
    committer = threading.Thread(target=commit_events, args=(task_ids, rate, submit["duration"], commits, tag))
    committer.start()
    try:
        return wrk(**submit)
    finally:
        committer.join()


async def follow(client: Any, task_id: uuid.UUID, received: dict[str, list[float]], connected: set[uuid.UUID]) -> None:
    """One follower: the marker of each output and edit it receives, with the time it arrived."""
    async with client.stream("GET", f"/api/tasks/{task_id}/events") as response:
        if response.status_code != 200:
            raise SystemExit(f"follower got {response.status_code}: {await response.aread()!r}")
        connected.add(task_id)
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("output", "edit"):
                data = json.loads(line[6:])
                marker = data["content"] if event == "output" else data["reason"]
                received.setdefault(marker, []).append(time.time())


async def followed_round(
    stream_base: str, token: str, task_ids: list[uuid.UUID], submit: dict[str, Any], rate: float
) -> tuple[list[float], dict[str, Any], int, int]:
    """Open the followers, then commit events and run the submit load together; (latencies, submit, lost, dup)."""
    import httpx

    received: dict[str, list[float]] = {}
    connected: set[uuid.UUID] = set()
    commits: dict[str, float] = {}
    limits = httpx.Limits(max_connections=len(task_ids) + 10, max_keepalive_connections=len(task_ids) + 10)
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=stream_base, headers=headers, timeout=None, limits=limits) as client:
        followers = [asyncio.create_task(follow(client, task_id, received, connected)) for task_id in task_ids]
        deadline = time.monotonic() + 120
        while len(connected) < len(task_ids):
            failed = [f for f in followers if f.done()]
            if failed:
                failed[0].result()
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(connected)} of {len(task_ids)} followers connected")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # every follower past its opening events
        loop = asyncio.get_running_loop()
        submitted = await loop.run_in_executor(None, submit_under_writes, submit, task_ids, rate, commits)
        await asyncio.sleep(3)  # the last events on their way
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    latencies = [(received[m][0] - at) * 1000 for m, at in commits.items() if m in received]
    lost = sum(1 for m in commits if m not in received)
    duplicated = sum(len(received[m]) - 1 for m in commits if m in received)
    return latencies, submitted, lost, duplicated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--followers", type=int, default=200, help="concurrent followers, one task each")
    parser.add_argument("--rate", type=float, default=50, help="events committed per second while measuring")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians reported (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections of the submit load")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    url = configure(args.engine, "crux_bench_stream", fresh=True)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from crux import gunicorn_conf
    from tasks import services
    from tasks.audit import Channel

    user = get_user_model().objects.create_user("bench-stream")
    token = Token.objects.create(user=user).key
    task_ids = [
        services.create_task(owner=user, actor=user, channel=Channel.API, title=f"followed {i}").pk
        for i in range(args.followers)
    ]
    connection.close()

    web_port = 18500 + os.getpid() % 500
    stream_port = web_port + 1
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": BROKER_URL,
        "API_THROTTLE_SUBMIT": "10000000/minute",
        "API_THROTTLE_READ": "10000000/minute",
        "LOG_LEVEL": "ERROR",
        "WEB_ACCESS_LOG": "",
        "PORT": str(web_port),
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "crux.wsgi", "-c", "python:crux.gunicorn_conf", "--log-level", "error"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    stream = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "crux.asgi:application", "--host", "127.0.0.1", "--port", str(stream_port),
         "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    web_base, stream_base = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{stream_port}"
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(SUBMIT_LUA)
    script.close()
    submit = {
        "url": f"{web_base}/api/tasks/",
        "token": token,
        "duration": args.duration,
        "connections": args.connections,
        "script": script.name,
    }
    alone: list[dict[str, Any]] = []
    followed: list[dict[str, Any]] = []
    latencies: list[float] = []
    lost = duplicated = 0
    try:
        wait_for(f"{web_base}/api/", web)
        wait_for(f"{stream_base}/api/tasks/events", stream)
        wrk(**{**submit, "duration": 2})  # warm-up
        for _ in range(args.rounds):
            alone.append(submit_under_writes(submit, task_ids, args.rate, {}))
            round_latencies, submitted, round_lost, round_duplicated = asyncio.run(
                followed_round(stream_base, token, task_ids, submit, args.rate)
            )
            followed.append(submitted)
            latencies += round_latencies
            lost += round_lost
            duplicated += round_duplicated
    finally:
        for process in (web, stream):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        Path(script.name).unlink(missing_ok=True)
        import redis

        clear_private_broker(redis.Redis.from_url(BROKER_URL))

    rate_alone = statistics.median(r["rate"] for r in alone)
    rate_followed = statistics.median(r["rate"] for r in followed)
    ratios = [f["rate"] / a["rate"] for a, f in zip(alone, followed, strict=True)]
    ratio = statistics.median(ratios)
    lat = summary(latencies) if latencies else {"median": float("nan"), "p95": float("nan"), "p99": float("nan")}
    print(
        f"\nstream benchmark — engine {args.engine}, {args.followers} followers, {args.rate:g} events/s, "
        f"wrk {args.connections} connections x {args.duration}s x {args.rounds} rounds, gunicorn "
        f"{gunicorn_conf.workers} sync workers + 1 uvicorn process, revision {git_revision()}"
    )
    print(f"{'measure':<58} {'value':>10} {'p95':>8} {'p99':>8}")
    figures = f"{lat['median']:>10.1f} {lat['p95']:>8.1f} {lat['p99']:>8.1f}"
    print(f"{'delivery latency, commit -> follower (ms)':<58} {figures}")
    print(f"{'events committed / lost / duplicated':<58} {len(latencies) + lost:>10} {lost:>8} {duplicated:>8}")
    print(f"{'submit alone (req/s)':<58} {rate_alone:>10.0f}")
    print(f"{f'submit with {args.followers} followers (req/s)':<58} {rate_followed:>10.0f}")
    print(f"{'ratio with / alone (goal >= 0.80), rounds ' + ' '.join(f'{r:.2f}' for r in ratios):<58} {ratio:>10.2f}")
    size = args.followers
    record("stream", f"delivery latency commit -> follower ({size} followers, {args.rate:g} events/s)",
           engine=args.engine, value=lat["median"], unit="ms", p95=lat["p95"], p99=lat["p99"], goal="p99 < 1000 ms",
           met=lat["p99"] < 1000 and not lost and not duplicated, size=size)  # fmt: skip
    record("stream", "submit POST /api/tasks/ alone", engine=args.engine, value=rate_alone, unit="req/s", size=size)
    record("stream", f"submit POST /api/tasks/ with {size} followers (ratio = with / alone)", engine=args.engine,
           value=rate_followed, unit="req/s", ratio=ratio, goal=">= 0.80", met=ratio >= 0.80, size=size)  # fmt: skip
    if lost or duplicated:
        raise SystemExit(f"{lost} events lost, {duplicated} duplicated")


if __name__ == "__main__":
    main()
