"""The legacy endpoints of the system Crux replaced (``/api/v1/solve``, ``/api/v1/jobs/{id}``), kept for old clients."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.api.errors import error_responses
from tasks.api.fields import ConfirmSerializer, ReasonSerializer
from tasks.api.permissions import OwnerOrCanCancel
from tasks.api.serializers import (
    LegacyJobSerializer,
    LegacySolveSerializer,
)
from tasks.api.throttling import SubmitThrottle
from tasks.api.views import IDEMPOTENCY_KEY, cancel_visible_task, submit_once, submitted
from tasks.audit import signed_in
from tasks.selectors import find_visible_task

JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id.")


class LegacySolveView(APIView):
    """Legacy ``POST /api/v1/solve``: submits a task; answers its job id."""

    throttle_classes = [SubmitThrottle]

    @extend_schema(
        summary="Submit (legacy /api/v1/solve)",
        description="The submit of the system Crux replaced: creates a queued task and answers its job id.",
        deprecated=True,
        request=LegacySolveSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: LegacyJobSerializer, 200: LegacyJobSerializer, **error_responses(400, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        body = LegacySolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        task, created = submit_once(
            request,
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
        description="A task in the shape of the replaced system's job record.",
        deprecated=True,
        parameters=[JOB_ID],
        responses={200: LegacyJobSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(LegacyJobSerializer(find_visible_task(signed_in(request.user), job_id, field="job_id")).data)

    @extend_schema(
        summary="Cancel a job (legacy)",
        description="Cancels, never deletes: the owner or a holder of tasks.cancel_task, with confirm=true.",
        deprecated=True,
        parameters=[JOB_ID, ConfirmSerializer],
        request=ReasonSerializer,
        responses={200: LegacyJobSerializer, **error_responses(400, 403, 404, 409)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        return Response(LegacyJobSerializer(cancel_visible_task(request, job_id, self, param="job_id")).data)
