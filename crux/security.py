"""Security at the edges: the login lockout (django-axes), the Content-Security-Policy (django-csp), and the
login redirect of an htmx request.

Every door that checks a password over HTTP (the admin login, the API's session login) calls authenticate() with
the request; the lockout backend refuses a locked-out username and address there, even with the right password,
and flags the request; axes' middleware then asks ``lockout_response`` for the answer instead of the form's 200.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off, get_lockout_message
from csp.middleware import CSPMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template.response import TemplateResponse
from django_htmx.http import HttpResponseClientRedirect

API_PREFIX = "/api/"


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check for every login made over HTTP; first of AUTHENTICATION_BACKENDS.

    A login without a request (``Client.login`` in tests, a shell) has no client address to count failures
    against: it is left to the model backend instead of raising, as axes' own backend does.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is not None:
            super().authenticate(request, username, password, **kwargs)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """429 for a locked-out client; Retry-After says when the cool-off ends (absent: until staff reset it)."""
    message = str(get_lockout_message())
    response: HttpResponse
    if request.path_info.startswith(API_PREFIX):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = TemplateResponse(request, "lockout.html", {"title": "Too many failed logins", "message": message})
        response.status_code = 429
        response.render()
    cool_off = get_cool_off(request)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


class DocumentCSPMiddleware(CSPMiddleware):
    """django-csp's policy on HTML pages, the only answers a browser runs scripts in.

    JSON, static files and Swagger UI's script are not documents; django-csp builds the header string anew for each
    response (about 60 us), which every API read would otherwise pay for nothing.
    """

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)


class HtmxFullPageRedirect:
    """A redirect answered to an htmx request (a live admin panel whose session expired, sent to the login page)
    moves the whole page there (``HX-Redirect``), instead of htmx following it and pasting the login form into
    the panel it refreshes. After django-htmx's middleware, which sets ``request.htmx``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if getattr(request, "htmx", False) and 300 <= response.status_code < 400 and response.has_header("Location"):
            return HttpResponseClientRedirect(response["Location"])
        return response
