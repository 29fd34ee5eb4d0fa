"""Export of the tasks selected in the task list, in the ``export`` command's formats, streamed as a download.

CSV: one row per task (``tasks.records.CSV_FIELDS``). JSON: one JSON line per task
with its history, outputs and metrics (``tasks.records.task_entries``), exact values.
What is stored was redacted at the door it came in by, so no secret is exported.
Needs ``tasks.view_task`` (the admin's "view" permission).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from tasks.records import CSV_FIELDS, csv_row, encode, task_entries

ENTRIES_PER_QUERY = 500


def _csv_lines(queryset: QuerySet) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for task in queryset.select_related("owner", "deleted_by").iterator(chunk_size=ENTRIES_PER_QUERY):
        writer.writerow(csv_row(task))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_lines(queryset: QuerySet) -> Iterator[str]:
    ids = list(queryset.values_list("pk", flat=True))
    for start in range(0, len(ids), ENTRIES_PER_QUERY):
        for entry in task_entries(ids[start : start + ENTRIES_PER_QUERY]):
            yield encode(entry) + "\n"


def _download(lines: Iterator[str], *, content_type: str, extension: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=content_type)
    name = f"crux-tasks-{timezone.now():%Y%m%d-%H%M%S}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@admin.action(description="Export selected as CSV", permissions=["view"])
def export_csv(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
    lines = _csv_lines(queryset.order_by("created_at", "id"))
    return _download(lines, content_type="text/csv; charset=utf-8", extension="csv")


@admin.action(description="Export selected as JSON (one line per task, with history and outputs)", permissions=["view"])
def export_json(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
    lines = _json_lines(queryset.order_by("created_at", "id"))
    return _download(lines, content_type="application/x-ndjson; charset=utf-8", extension="jsonl")
