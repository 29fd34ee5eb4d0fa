"""The Workers page: each live worker instance with its processes, the tasks they run now and its last heartbeat,
refreshed in place (htmx) every ``REFRESH``; the instances that stopped or went silent lately below.

Registered on the worker registry's model so that it shows in the admin index and its navigation; nobody adds,
changes or deletes a row here (workers write their own). Whoever may view tasks may open it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from tasks import selectors
from tasks.admin.base import ReadOnlyAdmin, can_view_tasks
from tasks.models import Worker
from tasks.selectors import LiveWorker

REFRESH = "2s"


@dataclass(frozen=True)
class WorkersPanel:
    """What the live part of the page shows, read once per refresh."""

    live: list[LiveWorker]
    gone: list[Worker]
    now: datetime

    @classmethod
    def read(cls) -> WorkersPanel:
        return cls(live=selectors.live_workers(), gone=selectors.gone_workers(), now=timezone.now())

    @property
    def refresh(self) -> str:
        return REFRESH

    @property
    def stale_seconds(self) -> int:
        return int(settings.WORKER_STALE_SECONDS)

    @property
    def processes(self) -> int:
        return sum(len(worker.processes) for worker in self.live)

    @property
    def running(self) -> int:
        return sum(worker.running for worker in self.live)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    """The Workers page in place of a change list; no change pages."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return can_view_tasks(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_view_tasks(request)

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.workers_view), name="tasks_worker_changelist"),
            path("live/", wrap(self.live_view), name="tasks_worker_live"),
        ]

    def workers_view(self, request: HttpRequest) -> HttpResponse:
        panel = self._panel(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Workers",
            "panel": panel,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tasks/workers.html", context)

    def live_view(self, request: HttpRequest) -> HttpResponse:
        """The live part alone, for the page to refresh itself in place."""
        return TemplateResponse(request, "admin/tasks/workers_live.html", {"panel": self._panel(request)})

    def _panel(self, request: HttpRequest) -> WorkersPanel:
        if not can_view_tasks(request):
            raise PermissionDenied
        return WorkersPanel.read()
