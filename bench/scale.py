"""The API at 10K, 100K and 1M tasks, and storage per 1,000 completed tasks.

    python -m bench.scale --engine sqlite --sizes 10000,100000,1000000 --runs 50
    python -m bench.scale --engine postgres --sizes 10000,100000 --runs 50 --storage-tasks 10000

Goals: p95 of the filtered list, search and history at the largest size ≤ 1.5 x
their p95 at the smallest, both measured in this run; history < 500 ms,
search < 1 s, task queries < 500 ms (the original specification). Storage ≤ 0.6 MB per 1,000
completed tasks on SQLite (the specification asks < 1 MB), indexes < 20 % of it.

Each size runs in its own child process (Django is set up once per process) on
the realistic data set that `bench.locate` and `bench.admin` use, built if
missing. Requests go in-process through Django's test client (whole middleware
stack, DRF, token authentication, throttles in Redis) as the non-staff owner
``bench0``, which is what an API client sees: its own fifth of the tasks. One
list is also asked for as staff (all owners). Each round asks every measure
once, so noise on a shared machine falls on all of them alike; the first
``--warmups`` rounds are not counted. The sizes take their rounds in turn (the
children wait for the parent's word before each round, one at a time), so a
machine that slows down or speeds up during the run does so for every size
alike, and the ratios between sizes do not measure its drift.

Storage is measured on a separate database of completed tasks only
(``bench.written``: each submitted through the submit service and run to its end
through Celery's tracer, so its rows are the ones Crux writes: 3 history rows
with their details, 2 outputs and its metrics; Celery reads a completion from the
task, with no result row): the whole
SQLite file (every page, free ones included) or, on PostgreSQL, every table of
the schema with its TOAST data, free-space and visibility maps and indexes,
after a VACUUM. What the tasks add is that size less the schema's own, measured
the same way on an empty database migrated beside it
(``crux_bench_storage_empty``: every table and index takes a page or more before
its first row); divided by N and multiplied by 1,000, it is the figure the goals
judge, as ``bench.task_cost`` measures a drained task by the growth of its
tables. MB are 10^6 bytes. It is also printed in bytes per task by component:
each table (on PostgreSQL its TOAST apart), each index and the search index
(SQLite's FTS5 tables; PostgreSQL's trigram indexes), and the whole database
divided by N beside it. An empty ``--sizes ''`` measures storage only.

With ``--parts`` each list and search is also taken apart (``PartTimer``): the wall time of its page
(``task_page``: the rows and their count), and within it the count window's start and the count, then the
serializer's and the renderer's; with the request's own, medians by size. What a page of 50 costs more than one of
21 at the same size is its rows; what the same page costs more at a million tasks than at 10,000 is the scale.
The wrapped functions cost about a microsecond a call more: leave ``--parts`` out for the ratios of record.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, cast

from bench.dataset import ROOT, configure, ensure, git_revision
from bench.report import record, summary
from bench.written import written_tasks

MB = 1_000_000
RATIO_GOAL = 1.5
# MB per 1,000 completed tasks: issue 16 asks <= 1 on both engines (its moonshot: 0.6), the specification < 1.
STORAGE_GOAL = 1.0
STORAGE_MOONSHOT = 0.6
INDEX_SHARE_GOAL = 0.20
ABSENT_WORD = "kubernetes"  # in no title or description the data-set builder writes

# The specification's floors per kind of request (ms): "< 500ms for task queries", history < 500, search < 1000.
FLOORS_MS = {"list": 500.0, "search": 1000.0, "history": 500.0}
FILTERS = "states=failed,completed&roles=backend&providers=claude&limit=50"
DATE_RANGE = "&date_from={week_before}&date_to={latest}"
# name -> (kind, query string of /api/tasks/persistent; None: the history of a random task)
MEASURES: dict[str, tuple[str, str | None]] = {
    "list: states, roles, providers": ("list", FILTERS),
    "list: same + 7-day date range": ("list", FILTERS + DATE_RANGE),
    "list: same, as staff (all owners)": ("list", FILTERS),
    "search: common word 'login'": ("search", "search=login"),
    "search: rarer, 3 words 'login cache billing'": ("search", "search=login+cache+billing"),
    # The two above with a page that both sizes fill: at 10,000 tasks the owner has 21 and 24 matches, under a page
    # of 50, at a million a full page; these ratios leave out the 30 more tasks the full page serializes.
    "list: date range, a page of 20": ("list", FILTERS.replace("limit=50", "limit=20") + DATE_RANGE),
    "search: 3 words, a page of 20": ("search", "search=login+cache+billing&limit=20"),
    f"search: word in no task '{ABSENT_WORD}'": ("search", f"search={ABSENT_WORD}"),
    "history: a random task": ("history", None),
}
STAFF_MEASURES = {"list: same, as staff (all owners)"}


# With --parts: each part of a list request by the function it is (module, attribute path), timed around its calls.
PARTS: dict[str, tuple[str, str]] = {
    "page": ("tasks.api.pagination", "task_page"),
    "window start": ("tasks.selectors.lists", "newest_window_start"),
    "count": ("tasks.selectors.lists", "_count_up_to"),
    "serialize": ("rest_framework.serializers", "ListSerializer.to_representation"),
    "render": ("tasks.api.renderers", "OrjsonRenderer.render"),
}


class PartTimer:
    """The wall time each of PARTS took since ``spent`` was last cleared, in seconds: its functions are replaced,
    where their callers look them up, by wrappers that time each call."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        for part, (module, path) in PARTS.items():
            owner: Any = importlib.import_module(module)
            *outer, name = path.split(".")
            for attribute in outer:
                owner = getattr(owner, attribute)
            setattr(owner, name, self._timed(part, getattr(owner, name)))

    def _timed(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[part] = self.spent.get(part, 0.0) + time.perf_counter() - started

        return timed


def measure_size(engine: str, size: int, runs: int, warmups: int, fresh: bool, parts: bool = False) -> dict[str, Any]:
    """In this process: time every measure on the data set of ``size`` tasks; timings in ms. Once ready, and after
    each round, it says so on stdout (``READY``) and waits for a line on stdin before the next round."""
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["API_THROTTLE_READ"] = "1000000000/minute"  # the throttle still runs (a Redis INCR), never refuses
    configure(engine, f"crux_bench_{size}", fresh=fresh)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Max
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from crux.memory import freeze_start_up_objects
    from tasks.models import Task

    ensure(size)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Autovacuum's first job after a load (an insert-driven VACUUM since PostgreSQL 13: the visibility map,
            # which index-only scans read) and its statistics; autovacuum is off on this server.
            cursor.execute("VACUUM (ANALYZE)")
    else:
        from persistence.planner import merge_search_index, refresh_statistics

        # What beat's crux.sqlite_statistics and crux.search_index_merge have done by the time a table holds this many
        refresh_statistics()
        merge_search_index()
    users = get_user_model().objects
    owner = users.get(username="bench0")
    staff, _ = users.get_or_create(username="bench-staff", defaults={"is_staff": True})
    clients = {
        who: Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        for who, user in (("owner", owner), ("staff", staff))
    }
    latest = Task.objects.aggregate(latest=Max("created_at"))["latest"]  # the data set's last day, whenever built
    stamps = {"latest": _rfc3339(latest), "week_before": _rfc3339(latest - timedelta(days=7))}
    history_ids = _random_task_ids(Task, owner, warmups + runs)
    times: dict[str, list[float]] = {name: [] for name in MEASURES}
    matches: dict[str, int] = {}
    timer = PartTimer() if parts else None
    taken_apart: dict[str, dict[str, list[float]]] = {name: {} for name in MEASURES}
    for round_ in range(warmups + runs):
        if round_ == warmups:
            # As each web worker does once it is ready (gunicorn's post_worker_init): what start-up and the warm-up
            # loaded is frozen, and a full collection no longer walks it (BENCHMARKS.md, "a full collection's pause").
            freeze_start_up_objects()
        _await_turn()
        for name, (kind, query) in MEASURES.items():
            if query is None:
                url = f"/api/tasks/history/{history_ids[round_]}"
            else:
                url = "/api/tasks/persistent?" + query.format(**stamps)
            client = clients["staff" if name in STAFF_MEASURES else "owner"]
            if timer is not None:
                timer.spent.clear()
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.content[:300]!r}")
            if round_ >= warmups:
                times[name].append(elapsed)
                if timer is not None:
                    for part, seconds in timer.spent.items():
                        taken_apart[name].setdefault(part, []).append(seconds * 1000)
            if kind != "history":
                matches[name] = response.json()["count"]
    tasks = Task.objects.count()
    _await_turn()
    return {"tasks": tasks, "times": times, "matches": matches, "parts": taken_apart}


READY = "bench.scale: ready for a round"


def _await_turn() -> None:
    """A child: say it is ready, and wait for the parent's word (a line on stdin) to go on."""
    print(READY, flush=True)
    sys.stdin.readline()


def _rfc3339(moment: Any) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_task_ids(task_model: Any, owner: Any, count: int) -> list[str]:
    """Ids of ``count`` live tasks of ``owner`` spread over the whole table: the first at or after a random
    UUID each (an index seek, so picking them costs nothing at 1M)."""
    rng = random.Random(7)
    tasks = task_model.objects.alive().filter(owner=owner).order_by("pk").values_list("pk", flat=True)
    ids: list[str] = []
    while len(ids) < count:
        pk = tasks.filter(pk__gte=uuid.UUID(int=rng.getrandbits(128))).first()
        if pk is not None:
            ids.append(str(pk))
    return ids


def measure_storage(engine: str, count: int, fresh: bool) -> dict[str, Any]:
    """In this process: the bytes of every b-tree (SQLite) or relation (PostgreSQL) of a data set of ``count``
    completed tasks, as components ``[table, name, kind, bytes]``; kinds ending in "index" make the index share."""
    with written_tasks(engine, count, fresh=fresh):
        from django.db import connection

        from tasks.models import CeleryResult, Task, TaskHistory, TaskOutput

        rows = {
            "tasks": Task.objects.count(),
            "history rows": TaskHistory.objects.count(),
            "outputs": TaskOutput.objects.count(),
            "Celery results": CeleryResult.objects.count(),
        }
        with connection.cursor() as cursor:
            components, total = storage_components(cursor, connection.vendor)
    return {"rows": rows, "total": total, "components": components}


def measure_schema(engine: str) -> dict[str, Any]:
    """In this process: the components of the schema alone, migrated on an empty database (after a VACUUM, which
    drops the pages the migrations freed): what a database takes before its first task."""
    configure(engine, "crux_bench_storage_empty", fresh=True)
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("VACUUM")  # PostgreSQL's: in storage_components
        components, total = storage_components(cursor, connection.vendor)
    return {"total": total, "components": components}


def storage_components(cursor: Any, vendor: str) -> tuple[list[list[Any]], int]:
    """The bytes of every b-tree (SQLite: the whole file's pages) or relation of the ``public`` schema
    (PostgreSQL, after a VACUUM) of the database behind ``cursor`` (Django's or a DB-API one), as components
    ``[table, name, kind, bytes]`` and their total; kinds ending in "index" make the index share."""
    components: list[list[Any]] = []
    if vendor == "sqlite":
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # A virtual table (the FTS5 search index) has no b-tree: its shadow tables <name>_data, ... hold it.
        cursor.execute("SELECT name, sql FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")
        virtual = {  # a CREATE VIRTUAL TABLE statement names its module: USING <module>
            name: cast("re.Match[str]", re.search(r"USING\s+(\w+)", sql, re.IGNORECASE))[1]
            for name, sql in cursor.fetchall()
        }
        cursor.execute(
            "SELECT s.name, COALESCE(m.tbl_name, s.name), m.type = 'index', s.pgsize "
            "FROM dbstat AS s LEFT JOIN sqlite_schema AS m ON m.name = s.name WHERE s.aggregate = 1"
        )
        btrees: dict[tuple[str, str, str], int] = {}
        for name, table, is_index, size in cursor.fetchall():
            owner = next((v for v in virtual if table.startswith(f"{v}_")), None)
            key = (
                (owner, owner, f"{virtual[owner]} tables") if owner else (table, name, "index" if is_index else "table")
            )
            btrees[key] = btrees.get(key, 0) + size
        components = [[*key, size] for key, size in btrees.items()]
        total = cursor.execute("PRAGMA page_count").fetchone()[0] * cursor.execute("PRAGMA page_size").fetchone()[0]
    else:
        cursor.execute("VACUUM")
        cursor.execute(
            "SELECT c.relname, pg_table_size(c.oid), "
            "COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
        for table, size, toast in cursor.fetchall():
            components += [[table, table, "table", size - toast], [table, f"{table} TOAST", "TOAST", toast]]
        cursor.execute(
            "SELECT t.relname, c.relname, a.amname || ' index', pg_total_relation_size(c.oid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = 'public' AND t.relkind = 'r'"
        )
        components += [list(row) for row in cursor.fetchall()]
        total = sum(size for *_names, size in components)
    return components, total


def _child_command(args: argparse.Namespace, path: Path, *flags: str) -> list[str]:
    command = [sys.executable, "-m", "bench.scale", "--engine", args.engine, *flags, "--out", str(path)]
    return [*command, "--fresh"] if args.fresh else command


def _output_path() -> Path:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        return Path(out.name)


def run_child(args: argparse.Namespace, *flags: str) -> dict[str, Any]:
    """Run this module in a fresh process with ``flags`` and return what it wrote."""
    path = _output_path()
    command = _child_command(args, path, *flags)
    try:
        done = subprocess.run(command, cwd=ROOT, check=False)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}")
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


def measure_sizes(args: argparse.Namespace, sizes: list[int]) -> dict[int, dict[str, Any]]:
    """Each size in a child process of its own (``measure_size``), started one after the other (a data set may be
    built on the way), then given their rounds in turn: one child measures while the others wait."""
    children: dict[int, tuple[subprocess.Popen[str], Path]] = {}
    rounds = ["--runs", str(args.runs), "--warmups", str(args.warmups), *(["--parts"] if args.parts else [])]
    try:
        for size in sizes:
            path = _output_path()
            command = _child_command(args, path, "--child-size", str(size), *rounds)
            child = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            children[size] = (child, path)
            _until_ready(child)
        for _ in range(args.warmups + args.runs):
            for child, _path in children.values():
                _go(child)
                _until_ready(child)
        by_size = {}
        for size, (child, path) in children.items():
            _go(child)
            child.stdout.read()  # type: ignore[union-attr]  # a pipe: Popen(stdout=PIPE)
            if child.wait():
                raise SystemExit(f"{' '.join(cast(list[str], child.args))} failed with exit status {child.returncode}")
            by_size[size] = json.loads(path.read_text())
        return by_size
    finally:
        for child, path in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
            path.unlink(missing_ok=True)


def _go(child: subprocess.Popen[str]) -> None:
    child.stdin.write("go\n")  # type: ignore[union-attr]  # a pipe: Popen(stdin=PIPE)
    child.stdin.flush()  # type: ignore[union-attr]


def _until_ready(child: subprocess.Popen[str]) -> None:
    """Pass on what the child prints until it says it is ready; a child that ends first has failed."""
    for line in child.stdout:  # type: ignore[union-attr]  # a pipe: Popen(stdout=PIPE)
        if line.rstrip("\n") == READY:
            return
        print(line, end="")
    command = " ".join(cast(list[str], child.args))  # as _child_command made it
    raise SystemExit(f"{command} ended with exit status {child.wait()} before its rounds were done")


def report_timings(engine: str, runs: int, warmups: int, by_size: dict[int, dict[str, Any]]) -> None:
    """Print and record median/p95/p99 per measure and size, and p95(largest) / p95(smallest)."""
    sizes = sorted(by_size)
    small, large = sizes[0], sizes[-1]
    print(
        f"\nscale — engine {engine}, as owner bench0 (token) unless noted, {runs} rounds after {warmups} warm-ups, "
        f"revision {git_revision()}"
    )
    print(
        f"{'measure (ms)':<46} {'tasks':>10} {'matches':>8} {'median':>8} {'p95':>8} {'p99':>8} "
        f"{'seed floor':>10}  {'p95 ÷ p95 at ' + f'{small:,}':>18}"
    )
    for name, (kind, _query) in MEASURES.items():
        floor = FLOORS_MS[kind]
        p95s = {}
        for size in sizes:
            result = by_size[size]
            stats = summary(result["times"][name])
            p95s[size] = stats["p95"]
            matched = result["matches"].get(name)
            ratio = stats["p95"] / p95s[small]
            shown = f"{ratio:.2f}" if size != small else ""
            print(
                f"{name:<46} {result['tasks']:>10,} {'' if matched is None else f'{matched:,}':>8} "
                f"{stats['median']:>8.1f} {stats['p95']:>8.1f} {stats['p99']:>8.1f} "
                f"{'< ' + f'{floor:.0f}':>10}  {shown:>18}"
            )
            record(
                "scale", name, engine=engine, size=result["tasks"], value=stats["median"], unit="ms",
                p95=stats["p95"], p99=stats["p99"], goal=f"p95 < {floor:.0f} ms (the original specification)",
                met=stats["p95"] < floor,
            )  # fmt: skip
        if large != small:
            ratio = p95s[large] / p95s[small]
            met = ratio <= RATIO_GOAL
            print(f"{'':<46} ratio p95 {large:,} / {small:,} = {ratio:.2f} (goal ≤ {RATIO_GOAL}): "
                  f"{'met' if met else 'NOT met'}")  # fmt: skip
            record(
                "scale", f"{name}: p95 at {large:,} ÷ p95 at {small:,}", engine=engine, size=large,
                value=ratio, unit="x", ratio=ratio, goal=f"≤ {RATIO_GOAL}", met=met,
            )  # fmt: skip


def report_parts(engine: str, by_size: dict[int, dict[str, Any]]) -> None:
    """Print the median of each part of each list and search (``--parts``) by size, beside the request's."""
    columns = ["request", *PARTS]
    print(f"\nparts — engine {engine}, median wall ms of each part where it ran (page: its rows and count)")
    print(f"{'measure':<46} {'tasks':>10} " + " ".join(f"{column:>12}" for column in columns))
    for name, (kind, _query) in MEASURES.items():
        if kind == "history":
            continue
        for size in sorted(by_size):
            result = by_size[size]
            figures = {"request": result["times"][name], **result["parts"][name]}
            cells = [f"{statistics.median(figures[c]):>12.2f}" if figures.get(c) else f"{'-':>12}" for c in columns]
            print(f"{name:<46} {result['tasks']:>10,} " + " ".join(cells))


def report_storage(engine: str, storage: dict[str, Any], schema: dict[str, Any]) -> None:
    """Print bytes per completed task by component (each table, its TOAST, each index, the search index) of the
    tables that weigh, the rest summed: what the tasks add to the ``schema``'s own size; record the size per 1,000
    completed tasks and the index share of what they add, and the whole database's beside them."""
    tasks = storage["rows"]["tasks"]
    empty = {(table, name, kind): size for table, name, kind, size in schema["components"]}
    components = [[table, name, kind, size - empty.get((table, name, kind), 0)] for table, name, kind, size in
                  storage["components"]]  # fmt: skip
    total = storage["total"] - schema["total"]
    index = sum(size for *_names, kind, size in components if kind.endswith("index"))
    whole_index = sum(size for *_names, kind, size in storage["components"] if kind.endswith("index"))
    per_1000 = total / tasks * 1000 / MB
    share = index / total
    by_table: dict[str, list[list[Any]]] = {}
    for component in components:
        by_table.setdefault(component[0], []).append(component)
    # Tables of at least 1 % of the total, and of them what weighs at least a byte per task.
    by_table = {
        table: [member for member in members if member[3] >= tasks]
        for table, members in by_table.items()
        if sum(size for *_names, size in members) >= 0.01 * total
    }
    shown = [member for members in by_table.values() for member in members]
    counts = ", ".join(f"{count:,} {what}" for what, count in storage["rows"].items())
    print(f"\nstorage — engine {engine}, {counts}, revision {git_revision()}")
    print(f"{'component (bytes per completed task)':<46} {'kind':<12} {'bytes':>7} {'share':>7} {'with indexes':>13}")
    for table, members in sorted(by_table.items(), key=lambda item: -sum(size for *_names, size in item[1])):
        members.sort(key=lambda component: (component[2].endswith("index"), -component[3]))
        group = f"{sum(size for *_names, size in members) / tasks:,.0f}"
        for position, (_table, name, kind, size) in enumerate(members):
            label = name if name == table else f"  {name}"
            print(f"{label:<46} {kind:<12} {size / tasks:>7,.0f} {size / total:>7.1%} {'' if position else group:>13}")
    rest = total - sum(size for *_names, size in shown)
    # + 0.0: a sum a few bytes under the schema's (SQLite's own table, fuller in an empty file) prints as 0, not -0.
    print(f"{f'everything else ({len(components) - len(shown)} smaller components)':<59} "
          f"{round(rest / tasks) + 0:>7,} {round(rest / total, 3) + 0.0:>7.1%}")  # fmt: skip
    print(f"{'total':<59} {total / tasks:>7,.0f} {1:>7.1%}")
    met = per_1000 <= STORAGE_GOAL
    goal = f"≤ {STORAGE_GOAL:g} MB; moonshot ≤ {STORAGE_MOONSHOT:g} MB"
    whole_per_1000 = storage["total"] / tasks * 1000 / MB
    whole_share = whole_index / storage["total"]
    print(
        f"per 1,000 completed tasks: {per_1000:.2f} MB (goal {goal}); "
        f"indexes: {share:.1%} of the total (goal < {INDEX_SHARE_GOAL:.0%})"
    )
    print(
        f"the whole database divided by {tasks:,} tasks: {whole_per_1000:.2f} MB per 1,000, indexes {whole_share:.1%}, "
        f"of which the schema alone (an empty database: {schema['total'] / 1e3:,.0f} kB) "
        f"{schema['total'] / tasks:,.0f} bytes a task"
    )
    record(
        "storage", "size per 1,000 completed tasks", engine=engine, size=tasks, value=per_1000, unit="MB",
        goal=goal, met=met,
    )  # fmt: skip
    record(
        "storage", "index share of total size", engine=engine, size=tasks, value=share * 100, unit="%",
        goal=f"< {INDEX_SHARE_GOAL:.0%} (the original specification)", met=share < INDEX_SHARE_GOAL,
    )  # fmt: skip
    record("storage", "whole database per 1,000 completed tasks, the schema's own size included", engine=engine,
           size=tasks, value=whole_per_1000, unit="MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="comma-separated task counts (empty: storage only)"
    )
    parser.add_argument("--runs", type=int, default=50, help="timed rounds per size (default 50)")
    parser.add_argument("--warmups", type=int, default=5, help="rounds not counted (default 5)")
    parser.add_argument(
        "--storage-tasks", type=int, default=10_000, help="completed tasks in the storage data set (0: skip)"
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the data sets (shared with bench.locate)")
    parser.add_argument("--parts", action="store_true", help="also time each list's parts (PartTimer)")
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-storage", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-schema", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size:
        result = measure_size(args.engine, args.child_size, args.runs, args.warmups, args.fresh, args.parts)
        Path(args.out).write_text(json.dumps(result))
        return
    if args.child_storage:
        Path(args.out).write_text(json.dumps(measure_storage(args.engine, args.child_storage, args.fresh)))
        return
    if args.child_schema:
        Path(args.out).write_text(json.dumps(measure_schema(args.engine)))
        return
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    if sizes:
        by_size = measure_sizes(args, sizes)
        report_timings(args.engine, args.runs, args.warmups, by_size)
        if args.parts:
            report_parts(args.engine, by_size)
    if args.storage_tasks:
        storage = run_child(args, "--child-storage", str(args.storage_tasks))
        report_storage(args.engine, storage, run_child(args, "--child-schema"))


if __name__ == "__main__":
    main()
