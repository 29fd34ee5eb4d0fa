"""HTTP through gunicorn with 8 concurrent clients: submit, batch submit and status, with wrk.

    python -m bench.http --engine sqlite --duration 5 --rounds 5

The batch submit posts ``BATCH_SIZE`` tasks per request; its rate is also given in tasks/s. The measures take
turns, round after round; each is preceded by a second of the same requests, not timed, so that it never times
the requests the server is still finishing for the measure before it.

Goals: submit >= 500/s with p99 <= 30 ms on SQLite; status >= 0.5 of the rate of
a bare Django view doing the same Redis GET (measured in the same run, same server).
Needs `wrk` (Debian package); `make bench` installs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import cast

from bench.dataset import ROOT, configure, git_revision
from bench.redis_keys import clear_private_broker
from bench.report import record

SUBMIT_LUA = """
wrk.method = "POST"
wrk.body = '{"title": "bench submit", "handler": "echo", "payload": {"message": "hello"}}'
wrk.headers["Content-Type"] = "application/json"
"""


BATCH_SIZE = 100
BATCH_BODY = {
    "tasks": [{"title": f"batch {i}", "handler": "echo", "payload": {"message": "hello"}} for i in range(BATCH_SIZE)]
}
BATCH_LUA = f"""
wrk.method = "POST"
wrk.body = '{json.dumps(BATCH_BODY)}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, *, token: str | None, duration: int, connections: int, script: str | None = None) -> dict[str, float]:
    args = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if token:
        args += ["-H", f"Authorization: Token {token}"]
    if script:
        args += ["-s", script]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(pct: str) -> float:
        # wrk --latency always prints the percentiles (and the rate, below)
        value, unit = cast("re.Match[str]", re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)).groups()
        return float(value) * units[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rate": float(cast("re.Match[str]", re.search(r"Requests/sec:\s+([\d.]+)", out)).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians reported (default 5)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default: crux/gunicorn_conf.py's)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    url = configure(args.engine, "crux_bench_http", fresh=True)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from persistence import mirror
    from tasks import services
    from tasks.audit import Channel

    user = get_user_model().objects.create_user("bench-http")
    token = Token.objects.create(user=user).key
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="status target")
    mirror.refresh(mirror.snapshot_of(task))
    connection.close()

    port = 18000 + os.getpid() % 1000
    broker = "redis://127.0.0.1:6379/13"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": broker,
        "API_THROTTLE_SUBMIT": "10000000/minute",
        "API_THROTTLE_READ": "10000000/minute",
        "LOG_LEVEL": "ERROR",
    }
    from crux import gunicorn_conf

    args.workers = args.workers or gunicorn_conf.workers
    env.update(WEB_CONCURRENCY=str(args.workers), WEB_ACCESS_LOG="")
    # The web process's own settings (crux/gunicorn_conf.py), with the baseline view added and no access log.
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "bench.baseline_wsgi:application", "-c", "python:crux.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--log-level", "error"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/bench/redis-get/{task.pk}", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(SUBMIT_LUA)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as batch_script:
            batch_script.write(BATCH_LUA)
        warm = {"token": token, "duration": 2, "connections": args.connections}
        wrk(f"{base}/api/tasks/{task.pk}/status", **warm)
        wrk(f"{base}/bench/redis-get/{task.pk}", **warm)
        wrk(f"{base}/api/tasks/", script=script.name, **warm)
        rows: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every measure
            for name, target, extra in (
                ("status: GET /api/tasks/{id}/status", f"{base}/api/tasks/{task.pk}/status", {}),
                ("baseline: bare Django view, same Redis GET", f"{base}/bench/redis-get/{task.pk}", {}),
                ("submit: POST /api/tasks/", f"{base}/api/tasks/", {"script": script.name}),
                (f"batch: POST /api/tasks/batch ({BATCH_SIZE} tasks)", f"{base}/api/tasks/batch",
                 {"script": batch_script.name}),
            ):  # fmt: skip
                # A second of the same requests, not timed, first: when wrk stops, the server still finishes the
                # requests it had read (up to one a connection: eight batches of 100 tasks, about 0.4 s of work),
                # and the next measure would time its first requests queued behind them.
                wrk(target, token=token, duration=1, connections=args.connections, **extra)
                result = wrk(target, token=token, duration=args.duration, connections=args.connections, **extra)
                rows.setdefault(name, []).append(result)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        Path(script.name).unlink(missing_ok=True)
        Path(batch_script.name).unlink(missing_ok=True)
        import redis

        clear_private_broker(redis.Redis.from_url(broker))

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(
        f"\nHTTP benchmark — engine {args.engine}, gunicorn {args.workers} {gunicorn_conf.worker_class} workers, "
        f"wrk {args.connections} connections x {args.duration}s x {args.rounds} rounds, revision {git_revision()}"
    )
    print(f"{'measure':<46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    summary = {}
    for name, results in rows.items():
        summary[name] = {k: median([r[k] for r in results]) for k in ("rate", "p50", "p99", "errors")}
        s = summary[name]
        print(f"{name:<46} {s['rate']:>9.0f} {s['p50']:>8.2f} {s['p99']:>8.2f} {s['errors']:>8.0f}")
    status = summary["status: GET /api/tasks/{id}/status"]
    bare = summary["baseline: bare Django view, same Redis GET"]
    submit = summary["submit: POST /api/tasks/"]
    batch = summary[f"batch: POST /api/tasks/batch ({BATCH_SIZE} tasks)"]
    ratio = status["rate"] / bare["rate"]
    print(f"{'ratio status / bare view (goal >= 0.5)':<46} {ratio:>9.2f}")
    print(f"{'batch submit in tasks/s':<46} {batch['rate'] * BATCH_SIZE:>9.0f}")
    config = f"gunicorn {args.workers} {gunicorn_conf.worker_class} workers, {args.connections} clients"
    record(
        "http",
        f"baseline: bare Django view, Redis GET ({config})",
        engine=args.engine,
        value=bare["rate"],
        unit="req/s",
        p99=bare["p99"],
    )
    record(
        "http",
        f"status GET /api/tasks/{{id}}/status ({config})",
        engine=args.engine,
        value=status["rate"],
        unit="req/s",
        p99=status["p99"],
        ratio=ratio,
        goal="ratio >= 0.5 of bare view",
        met=ratio >= 0.5,
    )
    record("http", f"batch submit POST /api/tasks/batch, {BATCH_SIZE} tasks a request ({config})",
           engine=args.engine, value=batch["rate"] * BATCH_SIZE, unit="tasks/s", p99=batch["p99"])  # fmt: skip
    submit_met = submit["rate"] >= 500 and submit["p99"] <= 30 if args.engine == "sqlite" else None
    record("http", f"submit POST /api/tasks/ ({config})", engine=args.engine, value=submit["rate"], unit="req/s",
           p99=submit["p99"], goal=">= 500/s, p99 <= 30 ms (SQLite)", met=submit_met)  # fmt: skip


if __name__ == "__main__":
    main()
