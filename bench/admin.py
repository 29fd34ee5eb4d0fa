"""Admin pages at scale (goal: task list and trash render < 300 ms with 1M tasks).

    python -m bench.admin --tasks 1000000 --engine sqlite

Renders admin pages in-process with Django's test client (full middleware,
templates and queries; no network), 20 times each after 3 warm-ups, on the
data set `bench.locate` builds (reused). Baseline in the same run: the
retention-policy list, a five-row admin page (the framework's own cost).
"""

from __future__ import annotations

import argparse
import os
import time

from bench.dataset import configure, ensure, git_revision
from bench.report import report_timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--fresh", action="store_true", help="rebuild the data set")
    args = parser.parse_args()
    os.environ["ALLOWED_HOSTS"] = "testserver"
    configure(args.engine, f"crux_bench_{args.tasks}", fresh=args.fresh)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tasks.models import Task

    ensure(args.tasks)
    admin_user = get_user_model().objects.filter(username="bench-admin").first()
    if admin_user is None:
        admin_user = get_user_model().objects.create_superuser("bench-admin", "bench@localhost", "unused-password")
    client = Client()
    client.force_login(admin_user)
    some_id = str(Task.objects.values_list("pk", flat=True).first())
    pages = {
        "baseline: retention policy list (5 rows)": "/admin/retention/retentionpolicy/",
        "task list": "/admin/tasks/task/",
        "task list, page 50": "/admin/tasks/task/?p=50",
        "task list, state=failed": "/admin/tasks/task/?state__exact=failed",
        "task list, search 'login cache'": "/admin/tasks/task/?q=login+cache",
        "task list, search by id prefix": f"/admin/tasks/task/?q={some_id[:8]}",
        "trash": "/admin/tasks/task/trash/",
        "task page (fields with the metrics, history and outputs inline)": f"/admin/tasks/task/{some_id}/change/",
        "timeline": f"/admin/tasks/task/{some_id}/timeline/",
        "dashboard (figures by the history's time)": "/admin/dashboard/",
        "task history list": "/admin/tasks/taskhistory/",
    }
    rows = {}
    for name, url in pages.items():
        for _ in range(3):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        rows[name] = times
    print(f"\nadmin benchmark — engine {args.engine}, {Task.objects.count()} tasks, revision {git_revision()}")
    goals = {"task list", "trash"}  # goal: each renders in < 300 ms at 1M tasks

    def judge(name: str, figures: dict[str, float]) -> tuple[str, bool | None]:
        return ("< 300 ms", figures["p95"] < 300) if name in goals else ("", None)

    report_timings("admin", rows, engine=args.engine, size=args.tasks,
                   baseline="baseline: retention policy list (5 rows)", judge=judge)  # fmt: skip


if __name__ == "__main__":
    main()
