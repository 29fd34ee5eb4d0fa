"""End-to-end drain of a backlog by real Celery workers: Crux vs a bare Celery no-op (ratio reported).

    python -m bench.drain --engine postgres --tasks 150 --workers 2 --runs 3

Crux: ``--tasks`` tasks (handler ``echo``, a tiny payload) are submitted through
``tasks.services.submit_task`` while no worker consumes their queue; then the
worker starts consuming and the drain is timed from the first claim (the
earliest ``started_at``) to the last completion (the latest ``completed_at``),
read from SQL. Each task is what a worker really does: the claim and the
outcome transitions (each a committed transaction with its history row), the
handler's output row, the metrics row, the result in the django-db result
backend and the mirror writes.

Baseline, same run: the same number of messages of a no-op task of a bare
Celery app (``bench/celery_noop.py``: no Django, no result backend), timed from
the first run of the task to the last, as each run stamps its time in Redis.

Floor, same run: the same number of messages of ``bench.floor`` (``bench/celery_noop.py``): a bare Celery task
that makes only the durable writes of an attempt, in raw SQL on the same database: two synced commits (the claim
with its history row; the outcome with an output and its history and metrics rows). It is the ceiling of any worker
that commits an attempt's start and end: ``floor / bare`` is the most a durable drain can reach here.

Guarded floor, same run: ``bench.guarded_floor``, the floor's two commits with the least Crux's guarantees take (the
task read before its claim, each transition a compare-and-set with its history row chained by HMAC, the mirror
written by a compare-and-set script after each commit): ``guarded floor / bare`` is the most a drain that keeps
them can reach here, the bound of the goal on this machine.

Budgets, same run (``--budgets``, ms): the guarded floor again, its task spending that much more of its pool
process's processor time in Python, half before each commit. What each drains against the bare no-op measures how
much work a task may add to the guarantees' least and still drain at the goal's ratio: the budget of Crux's own
code in the pool, beside its pool time above the guarded floor's in the processor time table.

Fairness: the four run in one ``celery worker`` process each with a prefork pool of
``--workers`` children, same broker (a private Redis database), late acks,
prefetch multiplier 1, gossip and mingle off. All workers are started and
ready before any timing, idle on an empty queue; each drain begins when the
worker is told to consume the backlog's queue (``add_consumer``), so worker
start-up is excluded from all. The drains take turns (the order rotates each
run), after one untimed warm-up drain each; medians of the runs are reported,
with their range.

CPU, same runs: the processor time each kind of drain took, per task, read from ``/proc`` (Linux) before and
after each timed drain: the worker's main process (it takes messages from the broker, hands them to the pool and
acknowledges them), its pool processes (the task itself), and the servers on this machine (Redis: the broker and the
mirror; PostgreSQL: every process of the cluster, its WAL writer included). The pool's busy share is its processor
time over the drain's time in every pool process: what it does not use, it waits (for the next message, a commit's
sync to disk, the database's write lock, a reply from Redis or PostgreSQL), per task in the table's last column.
A pool process that waits as long a task as the guarded floor's leaves the goal's drain (half the bare no-op's
rate) so much processor time a task, printed last beside Crux's own.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.dataset import ROOT, configure, git_revision
from bench.redis_keys import delete_keys
from bench.report import record, summary

BROKER_URL = "redis://127.0.0.1:6379/11"
PAYLOAD = {"message": "drain"}
TIMEOUT = 300.0  # seconds a drain may take before the benchmark gives up
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's unit of processor time


class Worker:
    """One ``celery worker`` process (prefork pool) in a process group of its own, idle until told to consume."""

    def __init__(self, app: Any, module: str, name: str, idle_queue: str, concurrency: int, log_dir: Path) -> None:
        self.app, self.name = app, name
        self.log = log_dir / f"{name.split('@')[0]}.log"
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", module, "worker", "-P", "prefork", "-c", str(concurrency),
                 "-Q", idle_queue, "-n", name, "--without-gossip", "--without-mingle", "-l", "WARNING"],
                cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the worker answers a ping: its pool is up and its start-up recovery done."""
        deadline = time.monotonic() + timeout
        while not self.app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {self.name} did not start:\n{self.tail()}")

    def consume(self, queue: str, start: bool) -> None:
        """Start (or stop) consuming ``queue``; returns once the worker has acknowledged the order."""
        control = self.app.control.add_consumer if start else self.app.control.cancel_consumer
        if not control(queue, destination=[self.name], reply=True, timeout=10):
            raise SystemExit(f"worker {self.name} did not answer {control.__name__}:\n{self.tail()}")

    def stop(self) -> None:
        """Warm shutdown of the whole group; killed if it has not left within 30 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _processes() -> list[tuple[int, int, str, float]]:
    """Every process on the machine as (pid, parent pid, command name, processor seconds used: user and system)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
            except (FileNotFoundError, ProcessLookupError):  # it has gone
                continue
            fields = tail.split()  # from the state on: proc(5)'s fields 3 and after
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)
            found.append((int(entry.name), int(fields[1]), head.split("(", 1)[1], cpu))
    return found


GOAL = 0.5  # issue 16: Crux drains at least half the bare no-op's rate
# What each share of a drain's processor time is named in the table, in its order.
CPU_SHARES = ("worker main", "pool", "Redis", "PostgreSQL")
# The servers whose processes each count as one share, by command name.
SERVERS = {"redis-server": "Redis", "postgres": "PostgreSQL"}


def cpu_by_share(worker: Worker) -> dict[str, float]:
    """Processor seconds used so far by ``worker``'s main process, its pool processes, and the Redis and
    PostgreSQL servers of this machine (one read of each process's ``/proc`` entry)."""
    main = worker.process.pid
    used = dict.fromkeys(CPU_SHARES, 0.0)
    for pid, parent, name, cpu in _processes():
        if pid == main:
            used["worker main"] += cpu
        elif parent == main:
            used["pool"] += cpu
        elif name in SERVERS:
            used[SERVERS[name]] += cpu
    return used


def drain_queue(worker: Worker, queue: str, done: Callable[[], bool]) -> dict[str, float]:
    """Let ``worker`` consume ``queue`` until ``done()``; the processor seconds by share it took meanwhile."""
    before = cpu_by_share(worker)
    worker.consume(queue, start=True)
    wait_for(done, worker)
    worker.consume(queue, start=False)
    after = cpu_by_share(worker)
    return {share: after[share] - before[share] for share in CPU_SHARES}


def wait_for(done: Callable[[], bool], worker: Worker) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"drain on {worker.name} did not finish:\n{worker.tail()}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--tasks", type=int, default=150, help="backlog drained per run (default 150)")
    parser.add_argument("--workers", type=int, default=2, help="prefork pool processes of each worker (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed drains of each kind; medians (default 3)")
    parser.add_argument(
        "--budgets", default="0.5,1", help="ms of Python a task added to the guarded floor, comma-separated"
    )
    args = parser.parse_args()
    budgets = {f"guarded+{ms:g}ms": ms for ms in (float(b) for b in args.budgets.split(",") if b)}
    kinds = (*KINDS, *budgets)

    token = f"crux-bench-drain-{os.getpid()}"
    os.environ.update(CELERY_BROKER_URL=BROKER_URL, REDIS_KEY_PREFIX=token, BENCH_NOOP_KEY=f"{token}:noop-runs")
    os.environ["BENCH_FLOOR_URL"] = configure(args.engine, "crux_bench_drain", fresh=True)
    import redis
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import F, Max, Min

    from bench.celery_noop import FLOOR_TABLES, floor, guarded_floor, noop
    from bench.celery_noop import app as bare_app
    from crux.celery import app as crux_app
    from persistence import dispatch, mirror
    from tasks import services
    from tasks.audit import Channel
    from tasks.models import Task

    crux_queue, bare_queue, floor_queue = f"{token}.crux", f"{token}.bare", f"{token}.floor"
    guarded_queue = f"{token}.guarded"
    idle_queue = f"{token}.idle"
    crux_app.conf.task_default_queue = crux_queue  # submissions publish here, not to the application's queue
    broker = redis.Redis.from_url(BROKER_URL)
    noop_runs = os.environ["BENCH_NOOP_KEY"]
    user = get_user_model().objects.create_user("bench-drain")

    def check_backlog(queue: str, count: int) -> None:
        """Every message is waiting in the queue the worker is about to consume (none lost or misrouted)."""
        waiting = dispatch.queued_count(broker, queue)
        if waiting != count:
            raise SystemExit(f"{waiting} messages in {queue}, not {count}")

    def crux_drain(worker: Worker, count: int) -> tuple[float, list[float], dict[str, float]]:
        """Submit ``count`` tasks, let the worker drain them; (tasks/s, per-task claim-to-completion seconds,
        processor seconds by share while it drained)."""
        ids = [
            services.submit_task(owner=user, actor=user, channel=Channel.API, title=f"drain {i}", handler="echo",
                                 request_payload=PAYLOAD).pk
            for i in range(count)
        ]  # fmt: skip
        batch = Task.objects.filter(pk__in=ids)
        check_backlog(crux_queue, count)
        used = drain_queue(worker, crux_queue, lambda: not batch.filter(state__in=("queued", "running")).exists())
        states = set(batch.values_list("state", flat=True))
        if states != {"completed"}:
            raise SystemExit(f"drained tasks ended {states}, not all completed:\n{worker.tail()}")
        span = batch.aggregate(first=Min("started_at"), last=Max("completed_at"))
        each = batch.annotate(took=F("completed_at") - F("started_at")).values_list("took", flat=True)
        rate = count / (span["last"] - span["first"]).total_seconds()
        return rate, [t.total_seconds() for t in each], used

    def timed_drain(
        worker: Worker, queue: str, count: int, publish: Callable[[int], None]
    ) -> tuple[float, dict[str, float]]:
        """Publish ``count`` messages, let the worker drain them; tasks/s from the runs' own time stamps, and the
        processor seconds by share while it drained."""
        broker.delete(noop_runs)
        for i in range(count):
            publish(i)
        check_backlog(queue, count)
        used = drain_queue(worker, queue, lambda: broker.llen(noop_runs) >= count)
        stamps = [float(t) for t in broker.lrange(noop_runs, 0, -1)]
        return count / (max(stamps) - min(stamps)), used

    def bare_drain(worker: Worker, count: int) -> tuple[float, dict[str, float]]:
        def publish(i: int) -> None:
            noop.apply_async(kwargs={"title": f"drain {i}", "handler": "echo", "request_payload": PAYLOAD},
                             queue=bare_queue)  # fmt: skip

        return timed_drain(worker, bare_queue, count, publish)

    with connection.cursor() as cursor:
        for statement in FLOOR_TABLES:
            cursor.execute(statement)

    def floor_drain(
        worker: Worker, count: int, guarded: bool = False, budget_ms: float = 0.0
    ) -> tuple[float, dict[str, float]]:
        """The floor's tasks are queued rows first, as Crux's are (at version 1, with a chain head), then their
        messages: of the floor, or of the guarded floor (with ``budget_ms`` more of Python a task)."""
        ids = [str(uuid.uuid4()) for _ in range(count)]
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM bench_floor_task")
            cursor.executemany("INSERT INTO bench_floor_task (id, state, head) VALUES (%s, 'queued', %s)",
                               [(i, uuid.uuid4().hex * 2) for i in ids])  # fmt: skip
        task, queue = (guarded_floor, guarded_queue) if guarded else (floor, floor_queue)

        def publish(i: int) -> None:
            task.apply_async(
                args=[ids[i]],  # type: ignore[arg-type]  # stubs: a tuple only; Celery takes any sequence
                kwargs={"budget_ms": budget_ms} if budget_ms else {},
                queue=queue,
            )

        rate, used = timed_drain(worker, queue, count, publish)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bench_floor_task WHERE state = 'completed'")
            if cursor.fetchone()[0] != count:
                raise SystemExit(f"the floor's tasks did not all complete:\n{worker.tail()}")
        return rate, used

    crux_rates: list[float] = []
    bare_rates: list[float] = []
    floor_rates: list[float] = []
    guarded_rates: list[float] = []
    budget_rates: dict[str, list[float]] = {kind: [] for kind in budgets}
    took: list[float] = []
    # Per kind: processor seconds by share over its timed drains, and the time those drains took (their tasks
    # over their rate).
    cpu: dict[str, dict[str, float]] = {kind: dict.fromkeys(CPU_SHARES, 0.0) for kind in kinds}
    drained_seconds = dict.fromkeys(kinds, 0.0)
    with tempfile.TemporaryDirectory() as logs, ExitStack() as cleanup:
        cleanup.callback(delete_keys, mirror.client(), token)
        cleanup.callback(delete_keys, broker, token)
        crux = Worker(crux_app, "crux", f"{token}-crux@bench", idle_queue, args.workers, Path(logs))
        cleanup.callback(crux.stop)
        bare = Worker(bare_app, "bench.celery_noop", f"{token}-bare@bench", idle_queue, args.workers, Path(logs))
        cleanup.callback(bare.stop)
        floor_worker = Worker(bare_app, "bench.celery_noop", f"{token}-floor@bench", idle_queue, args.workers,
                              Path(logs))  # fmt: skip
        cleanup.callback(floor_worker.stop)
        guarded_worker = Worker(bare_app, "bench.celery_noop", f"{token}-guarded@bench", idle_queue, args.workers,
                                Path(logs))  # fmt: skip
        cleanup.callback(guarded_worker.stop)
        for worker in (crux, bare, floor_worker, guarded_worker):
            worker.wait_ready()
        warmup = 4 * args.workers  # every pool process has opened its connections and imported its handlers
        crux_drain(crux, warmup)
        bare_drain(bare, warmup)
        floor_drain(floor_worker, warmup)
        floor_drain(guarded_worker, warmup, guarded=True)
        for run in range(args.runs):  # each kind goes first in turn
            first = run % len(kinds)
            for kind in kinds[first:] + kinds[:first]:
                if kind == "crux":
                    rate, latencies, used = crux_drain(crux, args.tasks)
                    crux_rates.append(rate)
                    took.extend(latencies)
                elif kind == "bare":
                    rate, used = bare_drain(bare, args.tasks)
                    bare_rates.append(rate)
                elif kind == "floor":
                    rate, used = floor_drain(floor_worker, args.tasks)
                    floor_rates.append(rate)
                else:  # the guarded floor, or one of its budgets
                    rate, used = floor_drain(guarded_worker, args.tasks, guarded=True, budget_ms=budgets.get(kind, 0))
                    (guarded_rates if kind == "guarded" else budget_rates[kind]).append(rate)
                drained_seconds[kind] += args.tasks / rate
                for share, seconds in used.items():
                    cpu[kind][share] += seconds

    crux_rate, bare_rate = statistics.median(crux_rates), statistics.median(bare_rates)
    floor_rate = statistics.median(floor_rates)
    ratios = [c / b for c, b in zip(crux_rates, bare_rates, strict=True)]
    ratio = statistics.median(ratios)
    ceilings = [f / b for f, b in zip(floor_rates, bare_rates, strict=True)]
    ceiling = statistics.median(ceilings)
    of_floor = statistics.median(c / f for c, f in zip(crux_rates, floor_rates, strict=True))
    guarded_rate = statistics.median(guarded_rates)
    bounds = [g / b for g, b in zip(guarded_rates, bare_rates, strict=True)]
    bound = statistics.median(bounds)
    of_guarded = statistics.median(c / g for c, g in zip(crux_rates, guarded_rates, strict=True))
    each = summary([t * 1000 for t in took])
    print(
        f"\ndrain benchmark — engine {args.engine}, {args.tasks} tasks x {args.runs} runs, one worker of "
        f"{args.workers} prefork processes each, revision {git_revision()}"
    )
    print(f"{'measure':<58} {'tasks/s':>8} {'(runs min-max)':>16} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    crux_label = "crux: echo tasks drained, first claim to last completion"
    bare_label = "baseline: bare Celery no-op, first run to last run"
    print(
        f"{crux_label:<58} {crux_rate:>8,.0f} {f'{min(crux_rates):,.0f}-{max(crux_rates):,.0f}':>16} "
        f"{each['median']:>7.2f} {each['p95']:>7.2f} {each['p99']:>7.2f}   (claim to completion, per task)"
    )
    print(f"{bare_label:<58} {bare_rate:>8,.0f} {f'{min(bare_rates):,.0f}-{max(bare_rates):,.0f}':>16}")
    floor_label = "floor: 2 synced commits a task in raw SQL, nothing else"
    print(f"{floor_label:<58} {floor_rate:>8,.0f} {f'{min(floor_rates):,.0f}-{max(floor_rates):,.0f}':>16}")
    guarded_label = "guarded floor: the same with the guarantees' least work"
    print(f"{guarded_label:<58} {guarded_rate:>8,.0f} "
          f"{f'{min(guarded_rates):,.0f}-{max(guarded_rates):,.0f}':>16}")  # fmt: skip
    print(f"{f'ratio crux / bare (goal >= {GOAL})':<58} {ratio:>8.2f} {f'{min(ratios):.2f}-{max(ratios):.2f}':>16}")
    print(f"{'ratio floor / bare: the most 2 commits a task allow':<58} {ceiling:>8.2f} "
          f"{f'{min(ceilings):.2f}-{max(ceilings):.2f}':>16}")  # fmt: skip
    print(f"{'ratio guarded floor / bare: the most the guarantees allow':<58} {bound:>8.2f} "
          f"{f'{min(bounds):.2f}-{max(bounds):.2f}':>16}")  # fmt: skip
    print(f"{'ratio crux / floor':<58} {of_floor:>8.2f}")
    print(f"{'ratio crux / guarded floor':<58} {of_guarded:>8.2f}")
    budget_ratios = report_budgets(budgets, budget_rates, bare_rates)
    report_cpu(args, kinds, cpu, drained_seconds, goal_rate=GOAL * bare_rate)
    common = {"engine": args.engine, "size": args.tasks}
    pool = f"{args.workers} processes"
    record("drain", f"crux drain, {pool}: claim to completion per task", value=each["median"], unit="ms",
           p95=each["p95"], p99=each["p99"], **common)  # fmt: skip
    record("drain", f"crux drain, {pool}: first claim to last completion (ratio = crux / bare)", value=crux_rate,
           unit="tasks/s", ratio=ratio, goal=f"≥ {GOAL} of bare (issue 16)", met=ratio >= GOAL, **common)  # fmt: skip
    record("drain", f"floor drain, {pool}: 2 synced commits a task in raw SQL (ratio = floor / bare)",
           value=floor_rate, unit="tasks/s", ratio=ceiling, **common)  # fmt: skip
    record("drain", f"guarded floor drain, {pool}: the floor with the guarantees' least work (ratio = guarded / bare)",
           value=guarded_rate, unit="tasks/s", ratio=bound, **common)  # fmt: skip
    record("drain", f"bare Celery no-op drain, {pool}: first run to last run", value=bare_rate, unit="tasks/s",
           **common)  # fmt: skip
    for kind, ms in budgets.items():
        record("drain", f"guarded floor + {ms:g} ms of Python a task, {pool} (ratio = its drain / bare)",
               value=statistics.median(budget_rates[kind]), unit="tasks/s", ratio=budget_ratios[kind],
               **common)  # fmt: skip


# The four drains of every run, in the order the first run takes them (the budgets' follow); the table of processor
# time names them so.
KINDS = ("crux", "bare", "floor", "guarded")


def report_budgets(
    budgets: dict[str, float], budget_rates: dict[str, list[float]], bare_rates: list[float]
) -> dict[str, float]:
    """Print each budget's drain and its ratio to the bare no-op's (medians of the runs); the ratios by kind."""
    ratios = {}
    for kind, ms in budgets.items():
        rates = budget_rates[kind]
        each = [r / b for r, b in zip(rates, bare_rates, strict=True)]
        ratios[kind] = statistics.median(each)
        label = f"guarded floor + {ms:g} ms of Python a task"
        print(f"{label:<58} {statistics.median(rates):>8,.0f} {f'{min(rates):,.0f}-{max(rates):,.0f}':>16}")
        print(f"{'  its ratio / bare':<58} {ratios[kind]:>8.2f} {f'{min(each):.2f}-{max(each):.2f}':>16}")
    return ratios


def report_cpu(
    args: argparse.Namespace,
    kinds: tuple[str, ...],
    cpu: dict[str, dict[str, float]],
    drained_seconds: dict[str, float],
    goal_rate: float,
) -> None:
    """Print and record each kind's processor time per task by share, its pool's busy share and the time a pool
    process waits per task (its share of the drain's time, less its processor time); then Crux's pool time above
    the guarded floor's, what the budgets are measured against, and the pool time a task the goal's ``goal_rate``
    leaves where pool processes wait as long as the guarded floor's (each task then takes ``workers / goal_rate``
    of a pool process's time, waiting included)."""
    tasks = args.tasks * args.runs
    shares = [share for share in CPU_SHARES if share != "PostgreSQL" or args.engine == "postgres"]
    print(f"\nprocessor time per task, ms (all {args.runs} runs of each kind; /proc)")
    print(f"{'drain':<15}" + "".join(f"{share:>13}" for share in shares) + f"{'total':>10}{'pool busy':>11}"
          + f"{'pool waits':>12}")  # fmt: skip
    waits = {}
    for kind in kinds:
        per_task = {share: cpu[kind][share] / tasks * 1000 for share in shares}
        busy = cpu[kind]["pool"] / (drained_seconds[kind] * args.workers)
        waits[kind] = (drained_seconds[kind] * args.workers - cpu[kind]["pool"]) / tasks * 1000
        print(f"{kind:<15}" + "".join(f"{per_task[share]:>13.2f}" for share in shares)
              + f"{sum(per_task.values()):>10.2f}{busy:>10.0%}{waits[kind]:>12.2f}")  # fmt: skip
        for share in shares:
            record("drain", f"{kind} drain: processor time a task, {share}", engine=args.engine, size=args.tasks,
                   value=per_task[share], unit="ms")  # fmt: skip
        record("drain", f"{kind} drain: pool processes busy", engine=args.engine, size=args.tasks,
               value=busy * 100, unit="%")  # fmt: skip
        record("drain", f"{kind} drain: a pool process's wait a task", engine=args.engine, size=args.tasks,
               value=waits[kind], unit="ms")  # fmt: skip
    above = (cpu["crux"]["pool"] - cpu["guarded"]["pool"]) / tasks * 1000
    print(f"crux's pool processes: {above:.2f} ms a task above the guarded floor's (what the budgets compare to)")
    record("drain", "crux drain: pool processor time a task above the guarded floor's", engine=args.engine,
           size=args.tasks, value=above, unit="ms")  # fmt: skip
    allowed = args.workers / goal_rate * 1000 - waits["guarded"]
    crux_pool = cpu["crux"]["pool"] / tasks * 1000
    print(
        f"the goal ({goal_rate:,.0f} tasks/s) with the guarded floor's wait of {waits['guarded']:.2f} ms a task "
        f"leaves the pool {allowed:.2f} ms of processor time a task; crux's pool takes {crux_pool:.2f}"
    )
    record("drain", "pool processor time a task the goal leaves at the guarded floor's wait", engine=args.engine,
           size=args.tasks, value=allowed, unit="ms")  # fmt: skip


if __name__ == "__main__":
    main()
