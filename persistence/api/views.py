"""The persistence endpoints: a task's live status from the Redis mirror, recovery, and the store's statistics."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from persistence.api.serializers import RecoverResultSerializer, StatsSerializer, TaskStatusSerializer
from persistence.selectors import task_status
from persistence.services import recover_task
from persistence.stats import collect_stats
from tasks import selectors
from tasks.api.errors import ServiceUnavailable, error_responses
from tasks.api.fields import ReasonSerializer
from tasks.api.permissions import CanRecover
from tasks.api.schema import TASK_ID
from tasks.audit import Channel, signed_in
from tasks.exceptions import TaskNotFound
from tasks.selectors import find_visible_task


class TaskStatusView(APIView):
    """Live state of one task, served from the Redis mirror (SQL fallback, which re-populates the mirror)."""

    @extend_schema(
        summary="Live status (Redis mirror)",
        description="The task's live state, progress and phase from the Redis mirror; on a miss, from SQL, which "
        "puts the entry back.",
        parameters=[TASK_ID],
        responses={200: TaskStatusSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        doc: dict[str, Any] = task_status(task_id)
        if not selectors.may_see(request.user, owner_id=doc["owner_id"], deleted=doc["deleted_at"] is not None):
            raise TaskNotFound(task_id)
        return Response(doc)


class TaskRecoverView(APIView):
    """``POST /api/tasks/{task_id}/recover`` (tasks.recover_task).

    An interrupted, failed or cancelled task is requeued (with a history row;
    409 once it used every attempt); any other task has its Redis mirror entry
    rewritten from SQL.
    """

    permission_classes = [IsAuthenticated, CanRecover]

    @extend_schema(
        summary="Recover a task from persistent storage",
        description="An interrupted, failed or cancelled task is requeued, with a history row (409 once it used "
        "every attempt); any other task has its Redis mirror entry rewritten from SQL (503 if Redis is down). "
        "Needs the permission tasks.recover_task.",
        parameters=[TASK_ID],
        request=ReasonSerializer,
        responses={200: RecoverResultSerializer, **error_responses(400, 403, 404, 409, 503)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        user = signed_in(request.user)
        task = find_visible_task(user, task_id)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or "recovered through the API"
        task, action = recover_task(task.pk, actor=user, channel=Channel.API, reason=reason)
        if action == "mirror_failed":
            raise ServiceUnavailable("Redis is unreachable: the mirror entry was not rewritten (SQL is unchanged).")
        return Response(RecoverResultSerializer({"action": action, "task": task}).data)


class PersistenceStatsView(APIView):
    """``GET /api/persistence/stats``: database statistics and health figures (staff)."""

    permission_classes = [IsAuthenticated, IsAdminUser]

    @extend_schema(
        summary="Persistence statistics",
        description="Counts by state, role and provider; task, history and output totals; database size and "
        "index share; mirror consistency; deletions in the last hour; last backup and last recovery. Staff only.",
        responses={200: StatsSerializer, **error_responses(403)},
    )
    def get(self, request: Request) -> Response:
        return Response(StatsSerializer(collect_stats()).data)
