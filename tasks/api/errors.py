"""Map the task domain's typed errors to 4xx answers with field messages (never a 500), and document them."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tasks.exceptions import AuditError, Conflict, InvalidTaskData, TaskError, TaskNotFound


def crux_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if not isinstance(exc, TaskError):
        return exception_handler(exc, context)
    if isinstance(exc, TaskNotFound):
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, InvalidTaskData):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    code: int = status.HTTP_409_CONFLICT if isinstance(exc, Conflict) else status.HTTP_400_BAD_REQUEST
    if isinstance(exc, AuditError):
        code = status.HTTP_403_FORBIDDEN
    body = {exc.field: [str(exc)]} if exc.field else {"detail": str(exc)}
    return Response(body, status=code)


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable."
    default_code = "service_unavailable"


# --- OpenAPI documentation of the error answers.
_DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_FIELD_ERRORS = {
    "type": "object",
    "description": "Field (or parameter) name -> list of messages; a malformed body answers {detail: message}.",
    "example": {"states": ["Select a valid choice. done is not one of the available choices."]},
    "additionalProperties": {},
}
_DESCRIPTIONS = {
    400: "Invalid input: the body names each offending field or parameter. Nothing was written.",
    401: "Not authenticated: send `Authorization: Token <key>` or log in.",
    403: "Authenticated, but not allowed (the message names the permission needed).",
    404: "No such task among those you may see (another user's task answers 404 too).",
    409: "Conflict: the task's state does not allow this (e.g. cancelling a finished task), the "
    "Idempotency-Key was already used for a different request, or deletions are suspended after a spike.",
    413: "The request body is larger than API_SUBMIT_MAX_BYTES.",
    429: "Too many requests: see the Retry-After header.",
    503: "A backing service (Redis) is unavailable.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for the given error status codes (401 and 429 are always included)."""
    wanted = sorted({401, 429, *codes})
    return {
        code: OpenApiResponse(
            response=_FIELD_ERRORS if code in (400, 409) else _DETAIL, description=_DESCRIPTIONS[code]
        )
        for code in wanted
    }
