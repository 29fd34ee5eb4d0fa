"""Map the task domain's typed errors to 4xx answers with field messages (never a 500)."""

from typing import Any

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tasks.exceptions import AuditError, IllegalTransition, InvalidTaskData, StaleState, TaskError, TaskNotFound


def crux_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if not isinstance(exc, TaskError):
        return exception_handler(exc, context)
    if isinstance(exc, TaskNotFound):
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, InvalidTaskData):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    code = status.HTTP_409_CONFLICT if isinstance(exc, (IllegalTransition, StaleState)) else status.HTTP_400_BAD_REQUEST
    if isinstance(exc, AuditError):
        code = status.HTTP_403_FORBIDDEN
    body = {exc.field: [str(exc)]} if exc.field else {"detail": str(exc)}
    return Response(body, status=code)
