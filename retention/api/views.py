"""The purge endpoint: what the retention policies let go, archived before it is removed."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from retention.api.serializers import PurgeParamsSerializer, PurgeReportSerializer
from retention.archive import ArchiveError
from retention.services import purge
from tasks.api.errors import ServiceUnavailable, error_responses
from tasks.audit import Channel, signed_in


class PurgeView(APIView):
    """``POST /api/purge`` (staff): purge what the retention policies let go.

    A dry run listing what would go unless ``confirm=true``; at most ``limit``
    (MAX_TASKS_PER_PURGE) tasks, archived before anything is removed, one ledger
    row each. Refused (409) while the deletion breaker is tripped.
    """

    permission_classes = [IsAuthenticated, IsAdminUser]

    @extend_schema(
        summary="Purge by retention policy (dry run unless confirm=true)",
        description="Lists what the retention policies let go, and purges it with confirm=true: at most `limit` "
        "tasks, each archived before anything is removed, one purge-ledger row each. Refused (409) while the "
        "deletion breaker is tripped; 503, with nothing removed, if the archive cannot be written. Staff only.",
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
                actor=signed_in(request.user),
                channel=Channel.API,
                confirm=params.validated_data["confirm"],
                limit=params.validated_data.get("limit"),
            )
        except ArchiveError as exc:
            raise ServiceUnavailable(f"The purge archive could not be written; nothing was deleted. {exc}") from None
        return Response(PurgeReportSerializer(report).data)
