"""HTTP views: thin adapters over tasks.services, the selectors and the permission rules.

Paths and query parameters of seed 004 are a contract; the legacy Crux paths
(``/api/v1/solve``, ``/api/v1/jobs/{id}``) are kept for old clients. Every
change goes through a service with the request's user as actor and the API
channel, so each leaves its history row.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from crux.health import run_checks
from persistence.locate import locate
from persistence.selectors import task_status
from persistence.stats import collect_stats
from retention.archive import ArchiveError
from retention.services import purge
from tasks import services
from tasks.api.errors import PayloadTooLarge, ServiceUnavailable, error_responses
from tasks.api.filters import TaskFilter
from tasks.api.permissions import (
    CanRecover,
    CanRestore,
    CanSoftDelete,
    OwnerOrCanAddOutput,
    OwnerOrCanCancel,
    may_see_deleted,
    visible_tasks,
)
from tasks.api.serializers import (
    CancelSerializer,
    DeleteSerializer,
    HealthSerializer,
    LegacyJobSerializer,
    LegacySolveSerializer,
    PurgeParamsSerializer,
    PurgeReportSerializer,
    ReasonSerializer,
    RecoverResultSerializer,
    StatsSerializer,
    TaskHistorySerializer,
    TaskOutputSerializer,
    TaskSerializer,
    TaskStatusSerializer,
    TaskSubmitSerializer,
    TraceSerializer,
)
from tasks.api.throttling import ReadThrottle, SubmitThrottle
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData, TaskNotFound
from tasks.models import Task, TaskHistory, TaskOutput

TASK_ID = OpenApiParameter(
    "task_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id (a malformed id answers 400)."
)
JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id.")
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": services.IDEMPOTENCY_KEY_MAX_LENGTH, "pattern": "^[ -~]+$"},
    OpenApiParameter.HEADER,
    description="Optional, 1-255 printable ASCII characters (e.g. a UUID). A retry with the same key returns "
    "the task the first request created (200, header Idempotent-Replayed: true), never a second task; the "
    "same key with a different body answers 409.",
)
DELETE_CONFIRM = (
    "Deleting is a soft delete (restorable) that must be confirmed: repeat the request with ?confirm=true&reason=<why>."
)
CANCEL_CONFIRM = "Cancelling stops the task's execution and must be confirmed: repeat the request with ?confirm=true."


def find_task(request: Request, task_id: Any, *, include_deleted: bool | None = None, param: str = "task_id") -> Task:
    """The task if ``request.user`` may see it; a malformed id is a 400 naming ``param``, an invisible one a 404."""
    try:
        pk = services.parse_task_id(task_id)
    except InvalidTaskData:
        raise ValidationError({param: [f"{task_id[:60]!r} is not a valid UUID."]}) from None
    task = visible_tasks(request.user, include_deleted=include_deleted).filter(pk=pk).first()
    if task is None:
        raise TaskNotFound(pk)
    return task


def check_body_size(request: Request) -> None:
    """Refuse (413) a body over API_SUBMIT_MAX_BYTES before it is parsed."""
    limit = settings.API_SUBMIT_MAX_BYTES
    message = f"The request body is larger than {limit} bytes (API_SUBMIT_MAX_BYTES); send a smaller payload."
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge(message)
    try:
        actual = len(request.body)
    except RequestDataTooBig:
        raise PayloadTooLarge(message) from None
    if actual > limit:
        raise PayloadTooLarge(message)


def submitted(request: Request, task: Task, created: bool, body: dict[str, Any]) -> Response:
    """201 for a new task; 200 and Idempotent-Replayed for a retry that found the first one."""
    location = reverse("task-detail", args=[task.pk], request=request)
    if created:
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})
    return Response(body, status=status.HTTP_200_OK, headers={"Location": location, "Idempotent-Replayed": "true"})


def cancel_visible_task(request: Request, task_id: str, view: APIView, *, param: str = "task_id") -> Task:
    """Shared by POST .../cancel and the legacy DELETE /api/v1/jobs/{id}."""
    task = find_task(request, task_id, param=param)
    view.check_object_permissions(request, task)
    params = CancelSerializer(data=request.query_params, context={"confirm_message": CANCEL_CONFIRM})
    params.is_valid(raise_exception=True)
    reason = params.validated_data.get("reason") or "cancelled through the API"
    return services.cancel(task.pk, actor=request.user, channel=Channel.API, reason=reason)


class ApiRootView(APIView):
    """Index of the API: links only, no data, so it is open to everyone."""

    permission_classes = [AllowAny]

    @extend_schema(
        summary="API index",
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


class TaskListMixin:
    """Owner-scoped task lists with the seed 004 filters, search, ordering and limit/offset paging."""

    serializer_class = TaskSerializer
    filterset_class = TaskFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Task.objects.none()
        # Deleted tasks are dropped by TaskFilter unless include_deleted=true (and allowed).
        return visible_tasks(self.request.user, include_deleted=True).order_by("-created_at", "-pk")


LIST_ERRORS = error_responses(400, 403)


class TaskListView(TaskListMixin, ListAPIView):
    """``GET /api/tasks/`` lists your tasks; ``POST /api/tasks/`` submits one."""

    throttle_classes = [ReadThrottle, SubmitThrottle]

    @extend_schema(
        summary="List tasks",
        description="Your tasks (staff: all), newest first. Soft-deleted tasks only with include_deleted=true.",
        responses={200: TaskSerializer(many=True), **LIST_ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Submit a task",
        description="Creates a queued task (committed with its first history row) and publishes it to a worker "
        "after commit. Credentials in payload, metadata and acceptance_criteria are redacted before storage.",
        request=TaskSubmitSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: OpenApiResponse(TaskSerializer, description="Created."),
            200: OpenApiResponse(TaskSerializer, description="Replay of an earlier request with the same key."),
            **error_responses(400, 409, 413),
        },
    )
    def post(self, request: Request) -> Response:
        check_body_size(request)
        serializer = TaskSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task, created = services.submit_task_once(
            idempotency_key=request.headers.get("Idempotency-Key"),
            owner=request.user,
            actor=request.user,
            channel=Channel.API,
            **serializer.validated_data,
        )
        return submitted(request, task, created, TaskSerializer(task).data)


class PersistentTaskListView(TaskListMixin, ListAPIView):
    """Seed 004 ``GET /api/tasks/persistent``: all your tasks from SQL with advanced filtering."""

    @extend_schema(
        summary="List tasks from persistent storage (seed 004)",
        description="Same filters as GET /api/tasks/: states, roles, providers, search, date_from, date_to, "
        "limit, offset, ordering, include_deleted.",
        responses={200: TaskSerializer(many=True), **LIST_ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TaskDetailView(APIView):
    """One task; ``DELETE`` soft-deletes it (permission, confirm=true and a reason required)."""

    def get_permissions(self) -> list[Any]:
        if self.request.method == "DELETE":
            return [IsAuthenticated(), CanSoftDelete()]
        return super().get_permissions()

    @extend_schema(
        summary="Task detail", parameters=[TASK_ID], responses={200: TaskSerializer, **error_responses(400, 404)}
    )
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(find_task(request, task_id)).data)

    @extend_schema(
        summary="Soft-delete a task",
        description="Flags the task deleted (who, when, reason), writes a history row and hides it from default "
        "lists; it stays restorable until a retention purge. Needs tasks.soft_delete_task. A spike of deletions "
        "trips a breaker: further deletions answer 409 until staff acknowledge it.",
        parameters=[TASK_ID, DeleteSerializer],
        responses={200: TaskSerializer, **error_responses(400, 403, 404, 409)},
    )
    def delete(self, request: Request, task_id: str) -> Response:
        task = find_task(request, task_id)
        params = DeleteSerializer(data=request.query_params, context={"confirm_message": DELETE_CONFIRM})
        params.is_valid(raise_exception=True)
        task = services.soft_delete(
            task.pk, user=request.user, channel=Channel.API, reason=params.validated_data["reason"]
        )
        return Response(TaskSerializer(task).data)


class TaskStatusView(APIView):
    """Live state of one task, served from the Redis mirror (SQL fallback, which re-populates the mirror)."""

    @extend_schema(
        summary="Live status (Redis mirror)",
        parameters=[TASK_ID],
        responses={200: TaskStatusSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        doc: dict[str, Any] = task_status(task_id)
        user = request.user
        if (not user.is_staff and doc["owner_id"] != user.pk) or (doc["deleted_at"] and not may_see_deleted(user)):
            raise TaskNotFound(task_id)
        return Response(doc)


class TaskHistoryView(ListAPIView):
    """Seed 004 ``GET /api/tasks/history/{task_id}``: the task's complete, hash-chained history, in order."""

    serializer_class = TaskHistorySerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return TaskHistory.objects.none()
        return find_task(self.request, self.kwargs["task_id"]).history.order_by("seq")

    @extend_schema(
        summary="Task history (seed 004)",
        parameters=[TASK_ID],
        responses={200: TaskHistorySerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TaskOutputsView(ListAPIView):
    """Seed 004 ``GET/POST /api/tasks/outputs/{task_id}``: a task's outputs and artifacts."""

    serializer_class = TaskOutputSerializer
    filter_backends: list[Any] = []
    permission_classes = [IsAuthenticated, OwnerOrCanAddOutput]
    throttle_classes = [ReadThrottle, SubmitThrottle]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return TaskOutput.objects.none()
        return find_task(self.request, self.kwargs["task_id"]).outputs.order_by("created_at", "id")

    @extend_schema(
        summary="List a task's outputs (seed 004)",
        parameters=[TASK_ID],
        responses={200: TaskOutputSerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Add an output to a task (seed 004)",
        description="The owner, or a holder of tasks.add_taskoutput. Credentials in the content are masked.",
        parameters=[TASK_ID],
        request=TaskOutputSerializer,
        responses={201: TaskOutputSerializer, **error_responses(400, 403, 404, 413)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        task = find_task(request, task_id)
        self.check_object_permissions(request, task)
        check_body_size(request)
        serializer = TaskOutputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        output = services.add_output(task.pk, **serializer.validated_data)
        return Response(TaskOutputSerializer(output).data, status=status.HTTP_201_CREATED)


class TaskCancelView(APIView):
    """Cancel a task that has not finished (owner, or tasks.cancel_task); confirm=true required."""

    permission_classes = [IsAuthenticated, OwnerOrCanCancel]

    @extend_schema(
        summary="Cancel a task",
        parameters=[TASK_ID, CancelSerializer],
        request=None,
        responses={200: TaskSerializer, **error_responses(400, 403, 404, 409)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(cancel_visible_task(request, task_id, self)).data)


class TaskRestoreView(APIView):
    """Bring a soft-deleted task back from the trash (tasks.restore_task)."""

    permission_classes = [IsAuthenticated, CanRestore]

    @extend_schema(
        summary="Restore a soft-deleted task",
        parameters=[TASK_ID],
        request=ReasonSerializer,
        responses={200: TaskSerializer, **error_responses(400, 403, 404)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        task = find_task(request, task_id, include_deleted=True)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or "restored through the API"
        task = services.restore(task.pk, user=request.user, channel=Channel.API, reason=reason)
        return Response(TaskSerializer(task).data)


class TaskRecoverView(APIView):
    """Seed 004 ``POST /api/tasks/{task_id}/recover`` (tasks.recover_task).

    An interrupted or failed task is requeued (with a history row); any other
    task has its Redis mirror entry rewritten from SQL.
    """

    permission_classes = [IsAuthenticated, CanRecover]

    @extend_schema(
        summary="Recover a task from persistent storage (seed 004)",
        parameters=[TASK_ID],
        request=ReasonSerializer,
        responses={200: RecoverResultSerializer, **error_responses(400, 403, 404, 503)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        task = find_task(request, task_id)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or "recovered through the API"
        task, action = services.recover_task(task.pk, actor=request.user, channel=Channel.API, reason=reason)
        if action == "mirror_failed":
            raise ServiceUnavailable("Redis is unreachable: the mirror entry was not rewritten (SQL is unchanged).")
        return Response(RecoverResultSerializer({"action": action, "task": task}).data)


class TaskTraceView(APIView):
    """``GET /api/tasks/{task_id}/trace``: what happened to this task, from every store, verdict first.

    The owner (of the task, or of the purged task per its ledger row) and staff
    may ask; for anyone else, and for an id with no trace at all, the answer is 404.
    """

    @extend_schema(
        summary="What happened to this task (locate)",
        parameters=[TASK_ID],
        responses={200: TraceSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        try:
            trace = locate(task_id)
        except InvalidTaskData:
            raise ValidationError({"task_id": [f"{task_id[:60]!r} is not a valid UUID."]}) from None
        owners = {trace.task["owner_id"]} if trace.task else {entry["owner_id"] for entry in trace.ledger}
        if not trace.found or not (request.user.is_staff or request.user.pk in owners):
            raise TaskNotFound(task_id)
        return Response(TraceSerializer(trace.as_dict()).data)


class PurgeView(APIView):
    """``POST /api/purge`` (staff): purge what the retention policies let go.

    A dry run listing what would go unless ``confirm=true``; at most ``limit``
    (MAX_TASKS_PER_PURGE) tasks, archived before anything is removed, one ledger
    row each. Refused (409) while the deletion breaker is tripped.
    """

    permission_classes = [IsAuthenticated, IsAdminUser]

    @extend_schema(
        summary="Purge by retention policy (dry run unless confirm=true)",
        parameters=[
            OpenApiParameter("confirm", OpenApiTypes.BOOL, description="true to purge; anything else is a dry run"),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": settings.MAX_TASKS_PER_PURGE},
                description="tasks in this run, 1..MAX_TASKS_PER_PURGE (default the maximum)",
            ),
        ],
        request=None,
        responses={200: PurgeReportSerializer, **error_responses(400, 403, 409, 503)},
    )
    def post(self, request: Request) -> Response:
        params = PurgeParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        try:
            report = purge(
                actor=request.user,
                channel=Channel.API,
                confirm=params.validated_data["confirm"],
                limit=params.validated_data.get("limit"),
            )
        except ArchiveError as exc:
            raise ServiceUnavailable(f"The purge archive could not be written; nothing was deleted. {exc}") from None
        return Response(PurgeReportSerializer(report).data)


class PersistenceStatsView(APIView):
    """Seed 004 ``GET /api/persistence/stats``: database statistics and health figures (staff)."""

    permission_classes = [IsAuthenticated, IsAdminUser]

    @extend_schema(
        summary="Persistence statistics (seed 004)", responses={200: StatsSerializer, **error_responses(403)}
    )
    def get(self, request: Request) -> Response:
        return Response(StatsSerializer(collect_stats()).data)


class HealthView(APIView):
    """``GET /api/health/``: 200 when database, Redis, broker and a worker answer, else 503 naming what failed.

    Public, for probes; only staff see latencies and error details.
    """

    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Health",
        responses={
            200: OpenApiResponse(HealthSerializer, description="All parts answer."),
            503: OpenApiResponse(HealthSerializer, description="Degraded: `failing` names the parts."),
        },
    )
    def get(self, request: Request) -> Response:
        report = run_checks()
        if not request.user.is_staff:
            report["checks"] = {name: {"ok": check["ok"]} for name, check in report["checks"].items()}
        code = status.HTTP_200_OK if not report["failing"] else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(report, status=code)


class LegacySolveView(APIView):
    """Legacy ``POST /api/v1/solve`` (seeds 000-001): submits a task; answers its job id."""

    throttle_classes = [SubmitThrottle]

    @extend_schema(
        summary="Submit (legacy /api/v1/solve)",
        deprecated=True,
        request=LegacySolveSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: LegacyJobSerializer, 200: LegacyJobSerializer, **error_responses(400, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        check_body_size(request)
        body = LegacySolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        task, created = services.submit_task_once(
            idempotency_key=request.headers.get("Idempotency-Key"),
            owner=request.user,
            actor=request.user,
            channel=Channel.API,
            title=data["title"],
            handler=data["handler"],
            request_payload=data["request"],
            metadata={"mode": data["mode"]},
        )
        return submitted(request, task, created, LegacyJobSerializer(task).data)


class LegacyJobView(APIView):
    """Legacy ``GET /api/v1/jobs/{job_id}`` reads a job; ``DELETE`` cancels it (authorized, confirm=true)."""

    permission_classes = [IsAuthenticated, OwnerOrCanCancel]

    @extend_schema(
        summary="Read a job (legacy)",
        deprecated=True,
        parameters=[JOB_ID],
        responses={200: LegacyJobSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(LegacyJobSerializer(find_task(request, job_id, param="job_id")).data)

    @extend_schema(
        summary="Cancel a job (legacy)",
        description="Cancels, never deletes: the owner or a holder of tasks.cancel_task, with confirm=true.",
        deprecated=True,
        parameters=[JOB_ID, CancelSerializer],
        responses={200: LegacyJobSerializer, **error_responses(400, 403, 404, 409)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        return Response(LegacyJobSerializer(cancel_visible_task(request, job_id, self, param="job_id")).data)
