"""Credentials never travel in a URL: a query string that carries one is refused before any view runs.

URLs are written to access logs, proxies' logs and browser histories. So a
``reason`` (free text, recorded in history), a parameter whose name says
credential (``token``, ``password``, ``api_key``...) or a value shaped like one
(``tasks.redaction``) answers 400 in JSON naming the parameter and asking for
the JSON body instead; nothing is read, written or logged with it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict

from tasks.redaction import is_secret_key, redact_text

# Free text that belongs in a JSON body, whatever it holds.
BODY_ONLY_PARAMETERS = frozenset({"reason"})


def credential_parameters(query: QueryDict) -> list[str]:
    """The names of query parameters that may carry a credential."""
    return sorted(
        name
        for name, values in query.lists()
        if name in BODY_ONLY_PARAMETERS
        or is_secret_key(name)
        or redact_text(name) != name
        or any(redact_text(value) != value for value in values)
    )


class RefuseCredentialsInURL:
    """Answer 400 (JSON) to a request whose query string carries a credential or a reason."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = credential_parameters(request.GET) if request.META.get("QUERY_STRING") else []
        if refused:
            return JsonResponse(
                {
                    name: [
                        f"{name} may not travel in the URL, which is logged: send it in the JSON request body "
                        "(a credential only in the Authorization header)."
                    ]
                    for name in refused
                },
                status=400,
            )
        return self.get_response(request)
