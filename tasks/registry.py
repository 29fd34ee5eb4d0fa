"""The registry of task handlers, named in settings.TASK_HANDLERS (name -> dotted path).

A handler is ``handler(ctx: TaskContext, payload: dict) -> JSON-able result``;
raising records a failure with the error. A handler declares the shape of its payload with
``@accepts(SomeSerializer)`` (a DRF serializer class); the submission services check every payload against it
before anything is written. A handler without a declaration accepts any JSON object.
"""

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

Handler = Callable[[Any, dict[str, Any]], Any]
# The declaration lives on the handler itself, so handlers added by TASK_HANDLERS_EXTRA declare theirs the same way.
PAYLOAD_ATTRIBUTE = "payload_serializer"


def registered_names() -> list[str]:
    return sorted(settings.TASK_HANDLERS)


@cache
def _load(path: str) -> Handler:
    return import_string(path)


def get_handler(name: str) -> Handler:
    """The handler callable for ``name``; KeyError if it is not registered."""
    return _load(settings.TASK_HANDLERS[name])


def accepts(serializer_class: type) -> Callable[[Handler], Handler]:
    """Declare a handler's payload: a DRF ``Serializer`` class whose fields name and type the payload's keys."""

    def declare(handler: Handler) -> Handler:
        setattr(handler, PAYLOAD_ATTRIBUTE, serializer_class)
        return handler

    return declare


def payload_serializer(name: str) -> type | None:
    """The serializer class the handler ``name`` declared, or None (any JSON object); KeyError if unregistered."""
    declared: type | None = getattr(get_handler(name), PAYLOAD_ATTRIBUTE, None)
    return declared


def payload_errors(name: str, payload: Any) -> dict[str, Any]:
    """Field name -> messages for what ``payload`` gets wrong for handler ``name`` (empty: accepted).

    Keys the declaration does not name pass through to the handler untouched; the payload is stored as submitted.
    """
    declared = payload_serializer(name)
    if declared is None:
        return {} if isinstance(payload, dict) else {"non_field_errors": ["Expected a JSON object."]}
    serializer = declared(data=payload)
    if serializer.is_valid():
        return {}
    errors: dict[str, Any] = json.loads(json.dumps(serializer.errors))
    return errors
