"""Endpoints composed at the top: the API index, health, and where a task is across every store (locate)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from crux.api.serializers import HealthSerializer, LocationSerializer
from crux.health import run_checks
from crux.locate import locate
from tasks import selectors
from tasks.api.errors import error_responses, retry_after
from tasks.api.schema import TASK_ID
from tasks.exceptions import TaskNotFound


class ApiRootView(APIView):
    """Index of the API: links only, no data, so it is open to everyone."""

    permission_classes = [AllowAny]

    @extend_schema(
        summary="API index",
        description="Links to the API's main resources; no data, so it is open to everyone.",
        responses=inline_serializer(
            "ApiRoot",
            {
                "tasks": serializers.URLField(),
                "persistent": serializers.URLField(),
                "stats": serializers.URLField(),
                "health": serializers.URLField(),
                "schema": serializers.URLField(),
                "docs": serializers.URLField(),
                "admin": serializers.URLField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "tasks": reverse("tasks", request=request),
                "persistent": reverse("tasks-persistent", request=request),
                "stats": reverse("persistence-stats", request=request),
                "health": reverse("health", request=request),
                "schema": reverse("schema", request=request),
                "docs": reverse("swagger-ui", request=request),
                "admin": request.build_absolute_uri("/admin/"),
            }
        )


class TaskLocateView(APIView):
    """``GET /api/tasks/{task_id}/locate``: what happened to this task, from every store, verdict first.

    The owner (of the task, or of the purged task per its ledger row) and staff
    may ask; for anyone else, and for an id found nowhere, the answer is 404.
    """

    @extend_schema(
        summary="What happened to this task (locate)",
        description="The task's story from every store (SQL, history, outputs, the Redis mirror, the broker, the "
        "purge ledger and archives), the verdict first. The owner (of the task, or of a purged task per its "
        "ledger row) and staff may ask; for anyone else, and for an id found nowhere, 404.",
        parameters=[TASK_ID],
        responses={200: LocationSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        location = locate(task_id)
        if location.task:
            owners = {location.task["owner_id"]}
        else:
            owners = {entry["owner_id"] for entry in location.ledger} or {None}
        if not location.found or not any(selectors.may_see(request.user, owner_id=owner) for owner in owners):
            raise TaskNotFound(task_id)
        return Response(LocationSerializer(location.as_dict()).data)


class TaskTraceView(TaskLocateView):
    """``GET /api/tasks/{task_id}/trace``: the former name of ``/locate``, kept for existing clients."""

    @extend_schema(
        summary="What happened to this task (former path of /locate)",
        description="The same answer as GET /api/tasks/{task_id}/locate, kept for existing clients.",
        deprecated=True,
        parameters=[TASK_ID],
        responses={200: LocationSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        return super().get(request, task_id)


class LivenessView(APIView):
    """``GET /api/health/live``: 200 while this process answers requests. No dependency is checked, nothing
    authenticated or throttled: a failing database or broker must not get a healthy process restarted."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Liveness",
        description="200 while this process answers requests. No dependency is checked, nothing is authenticated "
        "or throttled: a failing database or broker must not get a healthy web process restarted.",
        responses={200: inline_serializer("Liveness", {"status": serializers.ChoiceField(choices=["ok"])})},
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadinessView(APIView):
    """``GET /api/health/ready`` (and ``/api/health/``): 200 when the database accepts a write and Redis, the broker
    and a worker answer; else 503 with Retry-After naming what failed. Answers within HEALTH_TIMEOUT whatever hangs.

    Public, for probes. Only staff see latencies and error details; the caller is identified after the checks,
    and only when the database and Redis answered (identifying a token needs them, and must not hang the answer).
    """

    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Readiness",
        description="Whether this web process can serve: 503 with Retry-After when the database does not accept a "
        "write; 200 otherwise, `degraded` when Redis, the broker or every worker fails (tasks are still accepted "
        "and wait in SQL), `failing` naming the parts. Answers within HEALTH_TIMEOUT whatever hangs. Public, for "
        "probes; staff (by token or session) also see each check's latency and error.",
        responses={
            200: OpenApiResponse(HealthSerializer, description="Ready: ok, or degraded (`failing` names the parts)."),
            503: OpenApiResponse(HealthSerializer, description="Unavailable: the database fails."),
        },
    )
    def get(self, request: Request) -> Response:
        report = run_checks()
        identifiable = not {"database", "redis"} & set(report["failing"])
        if not (identifiable and request.user.is_staff):
            report["checks"] = {name: {"ok": check["ok"]} for name, check in report["checks"].items()}
        if report["status"] != "unavailable":
            return Response(report)
        return Response(report, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=retry_after())

    def perform_authentication(self, request: Request) -> None:
        """Identify the caller lazily, after the checks (DRF's documented way): see the class docstring."""
