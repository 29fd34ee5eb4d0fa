"""HTTP views: thin adapters over tasks.services and the selectors."""

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from persistence.selectors import task_status
from tasks.exceptions import TaskNotFound


class ApiRootView(APIView):
    """Index of the API: links only, no data, so it is open to everyone."""

    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer("ApiRoot", {"schema": serializers.URLField(), "docs": serializers.URLField()})
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "schema": reverse("schema", request=request),
                "docs": reverse("swagger-ui", request=request),
                "admin": request.build_absolute_uri("/admin/"),
            }
        )


TaskStatusSerializer = inline_serializer(
    "TaskStatus",
    {
        "id": serializers.UUIDField(),
        "title": serializers.CharField(),
        "state": serializers.CharField(),
        "progress": serializers.FloatField(),
        "current_phase": serializers.CharField(),
        "attempt_count": serializers.IntegerField(),
        "updated_at": serializers.DateTimeField(),
    },
)


class TaskStatusView(APIView):
    """Live state of one task, served from the Redis mirror with SQL fallback."""

    @extend_schema(responses={200: TaskStatusSerializer, 404: OpenApiResponse(description="No such task of yours.")})
    def get(self, request: Request, task_id: UUID) -> Response:
        doc: dict[str, Any] = task_status(task_id)
        if not request.user.is_staff and doc["owner_id"] != request.user.pk:
            raise TaskNotFound(task_id)
        return Response(doc)
