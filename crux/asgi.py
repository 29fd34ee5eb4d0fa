"""ASGI entry point of the stream process (``uvicorn crux.asgi:application``, Procfile ``stream``).

Django's ASGI handler, resolving every request against the stream routes (``crux.streams.urls``): this
process serves the event streams only; everything else is the web process's (gunicorn, sync workers).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.core.handlers.asgi import ASGIHandler

from crux.memory import freeze_start_up_objects

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
django.setup(set_prefix=False)

STREAM_URLCONF = "crux.streams.urls"


class StreamHandler(ASGIHandler):
    """Django's ASGI handler whose requests resolve against ``STREAM_URLCONF`` (Django reads ``request.urlconf``)."""

    def create_request(self, scope: Any, body_file: Any) -> tuple[Any, Any]:
        request, error = super().create_request(scope, body_file)
        if request is not None:
            request.urlconf = STREAM_URLCONF
        return request, error


application = StreamHandler()
freeze_start_up_objects(urlconf=STREAM_URLCONF)
