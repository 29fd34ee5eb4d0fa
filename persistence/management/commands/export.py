"""Export tasks as JSON lines (with history, outputs, metrics) or CSV, with the API's filters."""

import csv
from io import TextIOBase
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.http import HttpRequest
from tqdm import tqdm

from persistence.mirror import batched
from tasks import selectors
from tasks.api.filters import TaskFilter
from tasks.records import CSV_FIELDS, csv_row, encode, task_entries


class Command(BaseCommand):
    help = (
        "Export tasks for portability: --format json writes one JSON line per task with its history, "
        "outputs and metrics (exact values); --format csv one row per task. Filters are the API's list filters"
        ": --states, --roles, --providers (comma-separated), --search, --date-from, --date-to, "
        "--include-deleted, --ordering. Exit status: 0 written, 2 bad usage (a filter value names the problem)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["json", "csv"], default="json", dest="fmt")
        parser.add_argument("--output", default="-", help="file to write (default: standard output)")
        for name in ("states", "roles", "providers", "search", "date-from", "date-to", "ordering"):
            parser.add_argument(f"--{name}")
        parser.add_argument("--include-deleted", action="store_true")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, fmt: str, output: str, include_deleted: bool, no_progress: bool, **opts: Any) -> None:
        data = {k: v for k, v in opts.items() if k in ("states", "roles", "providers", "search", "ordering") and v}
        for name in ("date_from", "date_to"):
            if opts.get(name):
                data[name] = opts[name]
        if include_deleted:
            data["include_deleted"] = "true"
        operator = HttpRequest()  # the filters read only its user: staff, who may see the trash
        operator.user = get_user_model()(is_staff=True, is_superuser=True, is_active=True)
        filterset = TaskFilter(data=data, queryset=selectors.task_list(operator.user), request=operator)
        if not filterset.is_valid():
            for field, errors in filterset.errors.items():
                self.stderr.write(f"--{field.replace('_', '-')}: {' '.join(errors)}")
            raise SystemExit(2)
        queryset = filterset.qs
        if "ordering" not in data:
            queryset = queryset.order_by("created_at", "id")
        out: TextIOBase
        if output == "-":
            self.stdout.ending = ""
            out = self.stdout
        else:
            out = open(output, "w", newline="", encoding="utf-8")
        count = 0
        try:
            with tqdm(
                total=queryset.count(), unit="task", disable=no_progress or output == "-", file=self.stderr
            ) as bar:
                ids = queryset.values_list("pk", flat=True).iterator(chunk_size=1000)
                if fmt == "json":
                    for batch in batched(ids, 500):
                        for entry in task_entries(batch):
                            out.write(encode(entry) + "\n")
                            count += 1
                        bar.update(len(batch))
                else:
                    writer = csv.writer(out)
                    writer.writerow(CSV_FIELDS)
                    rows = queryset.select_related("owner", "deleted_by")
                    for task in rows.iterator(chunk_size=1000):
                        writer.writerow(csv_row(task))
                        count += 1
                        bar.update(1)
        finally:
            if out is not self.stdout:
                out.close()
        self.stderr.write(f"export: {count} task(s) written as {fmt} to {output}")
