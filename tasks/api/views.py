"""The task endpoints: thin adapters over the selectors (reads, visibility) and the services (writes).

Every change goes through a service with the request's user as actor and the
API channel, so each leaves its history row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.serializers import Serializer, ValidationError
from rest_framework.views import APIView

from tasks import selectors, services
from tasks.api.errors import error_responses
from tasks.api.fields import ConfirmSerializer, ReasonSerializer
from tasks.api.filters import TaskFilter
from tasks.api.permissions import (
    CanRestore,
    CanSoftDelete,
    OwnerOrCanAddOutput,
    OwnerOrCanCancel,
)
from tasks.api.schema import TASK_ID
from tasks.api.serializers import (
    DeleteSerializer,
    HandlerSerializer,
    TaskBatchResultSerializer,
    TaskBatchSerializer,
    TaskHistorySerializer,
    TaskOutputSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
)
from tasks.api.throttling import ReadThrottle, SubmitThrottle
from tasks.audit import Channel, signed_in
from tasks.models import Task, TaskHistory, TaskOutput
from tasks.registry import get_handler, payload_json_schema, registered_names
from tasks.selectors import find_visible_task, task_outputs

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": services.IDEMPOTENCY_KEY_MAX_LENGTH, "pattern": "^[ -~]+$"},
    OpenApiParameter.HEADER,
    description="Optional, 1-255 printable ASCII characters (e.g. a UUID). A retry with the same key returns "
    "the task the first request created (200, header Idempotent-Replayed: true), never a second task; the "
    "same key with a different body answers 409.",
)


DELETE_CONFIRM = (
    "Deleting is a soft delete (restorable) that must be confirmed: repeat the request with ?confirm=true "
    'and a "reason" in the JSON body.'
)


CANCEL_CONFIRM = "Cancelling stops the task's execution and must be confirmed: repeat the request with ?confirm=true."


def submit_once(request: Request, **fields: Any) -> tuple[Task, bool]:
    """Submit a task of the request's user through the API, once per ``Idempotency-Key``; (task, created)."""
    user = signed_in(request.user)
    return services.submit_task_once(
        idempotency_key=request.headers.get("Idempotency-Key"), owner=user, actor=user, channel=Channel.API, **fields
    )


def submitted(request: Request, task: Task, created: bool, body: dict[str, Any]) -> Response:
    """201 for a new task; 200 and Idempotent-Replayed for a retry that found the first one."""
    location = reverse("task-detail", args=[task.pk], request=request)
    if created:
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})
    return Response(body, status=status.HTTP_200_OK, headers={"Location": location, "Idempotent-Replayed": "true"})


def confirmed(request: Request, confirm_message: str, body_class: type[Serializer]) -> dict[str, Any]:
    """The JSON body of a destructive request that has ``confirm=true`` in its query; both checked at once.

    The reason travels in the body, never in the URL (which is logged): ``tasks.api.middleware`` refuses it there.
    """
    query = ConfirmSerializer(data=request.query_params, context={"confirm_message": confirm_message})
    body = body_class(data=request.data)
    if not all([query.is_valid(), body.is_valid()]):
        raise ValidationError({**query.errors, **body.errors})
    return body.validated_data


def cancel_visible_task(request: Request, task_id: str, view: APIView, *, param: str = "task_id") -> Task:
    """Shared by POST .../cancel and the legacy DELETE /api/v1/jobs/{id}."""
    user = signed_in(request.user)
    task = find_visible_task(user, task_id, field=param)
    view.check_object_permissions(request, task)
    reason = confirmed(request, CANCEL_CONFIRM, ReasonSerializer).get("reason") or "cancelled through the API"
    return services.cancel(task.pk, actor=user, channel=Channel.API, reason=reason)


class TaskListMixin(GenericAPIView):
    """Owner-scoped task lists with the list filters, search, ordering and limit/offset paging."""

    serializer_class = TaskSerializer
    filterset_class = TaskFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Task.objects.none()
        # Deleted tasks are dropped by TaskFilter unless include_deleted=true (and allowed).
        return selectors.task_list(signed_in(self.request.user))


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
        serializer = TaskSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task, created = submit_once(request, **serializer.validated_data)
        return submitted(request, task, created, TaskSerializer(task).data)


class TaskBatchView(APIView):
    """``POST /api/tasks/batch`` submits up to TASK_BATCH_MAX tasks in one transaction."""

    throttle_classes = [SubmitThrottle]
    body_limit = "API_BATCH_MAX_BYTES"

    @extend_schema(
        summary="Submit tasks in a batch",
        description="Creates every task of the batch, each queued with its first history row, in one transaction, "
        "and publishes them after commit; all are checked first and one bad item refuses the batch (400 naming its "
        "index and field), so nothing is half-written. A batch counts as one submission against API_THROTTLE_SUBMIT; "
        "its body may be up to API_BATCH_MAX_BYTES. The answer lists each task in the order sent (201 if any was "
        "created, 200 if every item replayed an earlier task by its idempotency key).",
        request=TaskBatchSerializer,
        responses={
            201: OpenApiResponse(TaskBatchResultSerializer, description="Created (some items may be replays)."),
            200: OpenApiResponse(TaskBatchResultSerializer, description="Every item replayed an earlier task."),
            **error_responses(400, 409, 413, batch=True),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = TaskBatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = signed_in(request.user)
        results = services.submit_batch(
            owner=user, actor=user, channel=Channel.API, items=serializer.validated_data["tasks"]
        )
        tasks_url = reverse("tasks", request=request)
        body = {
            "tasks": [
                {"id": str(task.pk), "state": task.state, "created": created, "url": f"{tasks_url}{task.pk}"}
                for task, created in results
            ]
        }
        created = any(created for _, created in results)
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PersistentTaskListView(TaskListMixin, ListAPIView):
    """``GET /api/tasks/persistent``: all your tasks from SQL with advanced filtering."""

    @extend_schema(
        summary="List tasks from persistent storage",
        description="Same filters as GET /api/tasks/: states, roles, providers, search, date_from, date_to, "
        "limit, offset, ordering, include_deleted.",
        responses={200: TaskSerializer(many=True), **LIST_ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TaskDetailView(APIView):
    """One task; ``DELETE`` soft-deletes it (permission, confirm=true and a reason required)."""

    def get_permissions(self) -> Sequence[Any]:
        if self.request.method == "DELETE":
            return [IsAuthenticated(), CanSoftDelete()]
        return super().get_permissions()

    @extend_schema(
        summary="Task detail",
        description="One task as SQL holds it: your own (staff: any); another user's task answers 404.",
        parameters=[TASK_ID],
        responses={200: TaskSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(find_visible_task(signed_in(request.user), task_id)).data)

    @extend_schema(
        summary="Soft-delete a task",
        description="Flags the task deleted (who, when, reason), writes a history row and hides it from default "
        "lists; it stays restorable until a retention purge. Needs tasks.soft_delete_task. A spike of deletions "
        "trips a breaker: further deletions answer 409 until staff acknowledge it.",
        parameters=[TASK_ID, ConfirmSerializer],
        request=DeleteSerializer,
        responses={200: TaskSerializer, **error_responses(400, 403, 404, 409)},
    )
    def delete(self, request: Request, task_id: str) -> Response:
        user = signed_in(request.user)
        task = find_visible_task(user, task_id)
        reason = confirmed(request, DELETE_CONFIRM, DeleteSerializer)["reason"]
        task = services.soft_delete(task.pk, user=user, channel=Channel.API, reason=reason)
        return Response(TaskSerializer(task).data)


class TaskHistoryView(ListAPIView):
    """``GET /api/tasks/history/{task_id}``: the task's complete, hash-chained history, in order."""

    serializer_class = TaskHistorySerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return TaskHistory.objects.none()
        task = find_visible_task(signed_in(self.request.user), self.kwargs["task_id"])
        return selectors.with_previous_links(task.history.order_by("seq"))

    @extend_schema(
        summary="Task history",
        description="The task's complete history, in order: one row per change, naming who, through what and why, "
        "each chained to the previous one by a keyed hash.",
        parameters=[TASK_ID],
        responses={200: TaskHistorySerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TaskOutputsView(ListAPIView):
    """``GET/POST /api/tasks/outputs/{task_id}``: a task's outputs and artifacts."""

    serializer_class = TaskOutputSerializer
    filter_backends: list[Any] = []
    permission_classes = [IsAuthenticated, OwnerOrCanAddOutput]
    throttle_classes = [ReadThrottle, SubmitThrottle]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return TaskOutput.objects.none()
        task = find_visible_task(signed_in(self.request.user), self.kwargs["task_id"])
        return task_outputs(task.pk)

    @extend_schema(
        summary="List a task's outputs",
        description="The task's outputs and artifacts, oldest first, paged.",
        parameters=[TASK_ID],
        responses={200: TaskOutputSerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Add an output to a task",
        description="The owner, or a holder of tasks.add_taskoutput. Credentials in the content are masked.",
        parameters=[TASK_ID],
        request=TaskOutputSerializer,
        responses={201: TaskOutputSerializer, **error_responses(400, 403, 404, 413)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        task = find_visible_task(signed_in(request.user), task_id)
        self.check_object_permissions(request, task)
        serializer = TaskOutputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        output = services.add_output(task.pk, **serializer.validated_data)
        return Response(TaskOutputSerializer(output).data, status=status.HTTP_201_CREATED)


class TaskCancelView(APIView):
    """Cancel a task that has not finished (owner, or tasks.cancel_task); confirm=true required."""

    permission_classes = [IsAuthenticated, OwnerOrCanCancel]

    @extend_schema(
        summary="Cancel a task",
        description="Cancels a task that has not finished (a running attempt is terminated after commit); "
        "confirm=true is required. The owner, or a holder of tasks.cancel_task.",
        parameters=[TASK_ID, ConfirmSerializer],
        request=ReasonSerializer,
        responses={200: TaskSerializer, **error_responses(400, 403, 404, 409)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        return Response(TaskSerializer(cancel_visible_task(request, task_id, self)).data)


class TaskRestoreView(APIView):
    """Bring a soft-deleted task back from the trash (tasks.restore_task)."""

    permission_classes = [IsAuthenticated, CanRestore]

    @extend_schema(
        summary="Restore a soft-deleted task",
        description="Brings a soft-deleted task back from the trash, with a history row. Needs tasks.restore_task.",
        parameters=[TASK_ID],
        request=ReasonSerializer,
        responses={200: TaskSerializer, **error_responses(400, 403, 404)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        user = signed_in(request.user)
        task = find_visible_task(user, task_id, include_deleted=True)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or "restored through the API"
        task = services.restore(task.pk, user=user, channel=Channel.API, reason=reason)
        return Response(TaskSerializer(task).data)


class HandlerListView(APIView):
    """``GET /api/handlers``: what a submission may name as ``handler``, and the payload each one accepts."""

    @extend_schema(
        summary="List handlers",
        description="Every registered handler (settings TASK_HANDLERS) with the JSON Schema of its payload. A "
        "submission whose payload does not fit answers 400 keyed by field, e.g. "
        '{"payload": {"seconds": ["A valid number is required."]}}; keys a schema does not name are passed '
        "through, and a handler without a declaration accepts any JSON object.",
        responses={200: HandlerSerializer(many=True), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        handlers = [
            {
                "name": name,
                "description": (get_handler(name).__doc__ or "").strip().split("\n")[0],
                "payload_schema": payload_json_schema(name),
            }
            for name in registered_names()
        ]
        return Response(HandlerSerializer(handlers, many=True).data)
