"""The app plus one bare Django view, for the HTTP benchmark's baseline only (never deployed).

``/bench/redis-get/<id>`` does the same Redis GET as the status endpoint, with
no authentication, no DRF and no SQL: the floor the status endpoint is measured against.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")

import django

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import clear_url_caches, path  # noqa: E402

from crux import urls  # noqa: E402
from persistence import mirror  # noqa: E402


def redis_get(request: HttpRequest, task_id: str) -> HttpResponse:
    raw = mirror.client().get(mirror.task_key(task_id))
    if raw is None:
        return JsonResponse({"detail": "Not found."}, status=404)
    return HttpResponse(raw, content_type="application/json")


urls.urlpatterns.append(path("bench/redis-get/<str:task_id>", redis_get))
clear_url_caches()
application = WSGIHandler()
