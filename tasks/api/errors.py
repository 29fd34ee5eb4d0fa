"""Map the task domain's typed errors to 4xx answers with field messages (never a 500), a database that refuses
to 503 with Retry-After, and document them."""

import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tasks.exceptions import AuditError, Conflict, InvalidTaskData, TaskError, TaskNotFound

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = (
    "The database refused the request (down, full or locked); a change is committed whole or not at all. Retry later."
)


def database_refused(exc: BaseException | None) -> bool:
    """The database refused for a reason that may pass (down, disk full, lock or statement timeout).

    Not its other errors (integrity, data, programming): those are bugs, answered 500 and logged.
    """
    return isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError


def retry_after() -> dict[str, str]:
    """The header of every 503: when to try again (API_RETRY_AFTER_SECONDS)."""
    return {"Retry-After": str(settings.API_RETRY_AFTER_SECONDS)}


def crux_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if database_refused(exc):
        logger.warning("database refused an API request: %s", exc, exc_info=exc)
        exc = ServiceUnavailable(DATABASE_UNAVAILABLE)
    if isinstance(exc, ServiceUnavailable):
        response = exception_handler(exc, context)
        assert response is not None  # an APIException always gets an answer
        for header, value in retry_after().items():
            response[header] = value
        return response
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
    "description": "Field (or query parameter) name -> list of messages. A body that is not a JSON object (or "
    "not JSON at all: malformed, nested deeper than API_JSON_MAX_DEPTH) answers {detail: message}: no field applies.",
    "example": {"states": ["Select a valid choice. done is not one of the available choices."]},
    "anyOf": [
        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}, "minProperties": 1},
        _DETAIL,
    ],
}
_MESSAGES = {"type": "array", "items": {"type": "string"}}
_ITEM_FIELDS = {"type": "object", "additionalProperties": {"anyOf": [_MESSAGES, {"type": "object"}]}}
# A batch's refusal names the item by its index, then its fields; a JSON field (payload) nests its own keys.
_BATCH_ERRORS = {
    "description": "As the field errors of a single submit, under ``tasks`` by the item's index (a string); "
    "``tasks`` itself holds messages when the list is wrong as a whole (empty, too long, not a list).",
    "example": {"tasks": {"2": {"payload": {"seconds": ["A valid number is required."]}}}},
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "tasks": {
                    "anyOf": [
                        _MESSAGES,
                        {
                            "type": "object",
                            "additionalProperties": {
                                "anyOf": [
                                    _MESSAGES,  # the item as a whole (null, not an object)
                                    _ITEM_FIELDS,
                                ]
                            },
                        },
                    ]
                }
            },
            "additionalProperties": _MESSAGES,
            "minProperties": 1,
        },
        _DETAIL,
    ],
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
    503: "A backing service (the database, or Redis where the operation needs it) is unavailable: nothing was "
    "half-written; retry after the Retry-After header's seconds.",
}


def error_responses(*codes: int, batch: bool = False) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for the given error status codes (401, 429 and 503 are always included); with ``batch``,
    field errors by item (``POST /api/tasks/batch``)."""
    wanted = sorted({401, 429, 503, *codes})
    fields = _BATCH_ERRORS if batch else _FIELD_ERRORS
    return {
        code: OpenApiResponse(response=fields if code in (400, 409) else _DETAIL, description=_DESCRIPTIONS[code])
        for code in wanted
    }
