"""Every answer under /api/ is JSON, whatever fails and wherever it fails.

DRF answers the errors of its views (tasks.api.errors). What happens outside
them was answered with Django's HTML pages: an unknown path (404), a body over
the limit, a database that refuses while a middleware (session, authentication)
or a plain Django view uses it (500). Two pieces close that, for every route at
once (the other slash form is routed by crux.urls.EitherSlash):

- ``ApiEdgeMiddleware`` refuses a declared body over API_SUBMIT_MAX_BYTES (or
  the larger limit its route's view names: the batch submit) (413) before
  anything runs, and turns any error answer that is not JSON into
  ``{"detail": reason}`` with the same status and headers;
- ``server_error``, Django's ``handler500``, answers an exception no one else
  handled: 503 with Retry-After when the database refused, else a 500 in JSON
  (Django has logged the traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults

from tasks.api.errors import DATABASE_UNAVAILABLE, database_refused, retry_after
from tasks.api.parsers import BODY_LIMIT, body_limit_of, body_too_large_message

API_ROOT = "/api"


def is_api(request: HttpRequest) -> bool:
    return request.path_info == API_ROOT or request.path_info.startswith(f"{API_ROOT}/")


def _is_json(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "").split(";")[0].strip()
    return content_type == "application/json" or content_type.endswith("+json")


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _body_limit(request: HttpRequest) -> str:
    """The setting that bounds this route's request body (``tasks.api.parsers.body_limit_of`` its view)."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return BODY_LIMIT
    return body_limit_of(getattr(match.func, "view_class", None))


def _as_json(response: HttpResponse) -> HttpResponse:
    """The error ``response`` with a JSON body, its status and headers (Allow, cookies, security headers) kept."""
    response.content = json.dumps({"detail": response.reason_phrase}).encode()
    response["Content-Type"] = "application/json"
    if response.has_header("Content-Length"):
        response["Content-Length"] = str(len(response.content))
    return response


class ApiEdgeMiddleware:
    """JSON errors and the body-size limit for everything under /api/."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api(request):
            return self.get_response(request)
        declared = _declared_length(request)
        if declared > settings.API_SUBMIT_MAX_BYTES:
            setting = _body_limit(request)
            if declared > getattr(settings, setting):
                return JsonResponse({"detail": body_too_large_message(setting)}, status=413)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.streaming and not _is_json(response):
            return _as_json(response)
        return response


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500, called while the unhandled exception is being handled (so sys.exc_info() names it)."""
    if not is_api(request):
        return defaults.server_error(request)
    if database_refused(sys.exc_info()[1]):
        return JsonResponse({"detail": DATABASE_UNAVAILABLE}, status=503, headers=retry_after())
    return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)
