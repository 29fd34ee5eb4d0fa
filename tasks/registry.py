"""The registry of task handlers, named in settings.TASK_HANDLERS (name -> dotted path).

A handler is ``handler(ctx: TaskContext, payload: dict) -> JSON-able result``;
raising records a failure with the error. A handler declares the shape of its payload with
``@accepts(SomeSerializer)`` (a DRF serializer class); the submission services check every payload against it
before anything is written. A handler without a declaration accepts any JSON object. ``@options(...)`` sets a
handler's defaults (queue, priority, time limits, attempts, backoff), which a submission may override per task.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

Handler = Callable[[Any, dict[str, Any]], Any]
# The declaration lives on the handler itself, so handlers added by TASK_HANDLERS_EXTRA declare theirs the same way.
PAYLOAD_ATTRIBUTE = "payload_serializer"
OPTIONS_ATTRIBUTE = "crux_options"


@dataclass(frozen=True)
class HandlerOptions:
    """A handler's defaults for the tasks it runs; None leaves the setting's (or the model's) default."""

    queue: str | None = None
    priority: int | None = None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    max_attempts: int | None = None
    retry_backoff: float | None = None


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


def options(**defaults: Any) -> Callable[[Handler], Handler]:
    """Declare a handler's defaults, e.g. ``@options(queue="agents", priority=7, time_limit=600, max_attempts=5)``."""
    declared = HandlerOptions(**defaults)

    def declare(handler: Handler) -> Handler:
        setattr(handler, OPTIONS_ATTRIBUTE, declared)
        return handler

    return declare


def handler_options(name: str) -> HandlerOptions:
    """The defaults the handler ``name`` declared (all None if it declared none); KeyError if unregistered."""
    declared: HandlerOptions = getattr(get_handler(name), OPTIONS_ATTRIBUTE, HandlerOptions())
    return declared


def payload_serializer(name: str) -> type | None:
    """The serializer class the handler ``name`` declared, or None (any JSON object); KeyError if unregistered."""
    declared: type | None = getattr(get_handler(name), PAYLOAD_ATTRIBUTE, None)
    return declared


def payload_json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of handler ``name``'s payload (``GET /api/handlers``, the admin's payload help).

    Mapped by drf-spectacular as /api/schema maps request bodies; no declaration is any JSON object, and keys a
    declaration does not name pass through to the handler (``payload_errors``). KeyError if unregistered.
    """
    # Imported here: drf-spectacular imports DRF's views, whose parsers (settings) import this module.
    from drf_spectacular.openapi import AutoSchema
    from drf_spectacular.plumbing import ComponentRegistry

    declared = payload_serializer(name)
    if declared is None:
        return {"type": "object", "additionalProperties": True}
    inspector = AutoSchema()
    inspector.view = SimpleNamespace(request=None)  # type: ignore[assignment]  # the mapping reads only the request
    inspector.registry = ComponentRegistry()
    inspector.method, inspector.path = "POST", ""
    schema: dict[str, Any] = inspector._map_serializer(declared(), "request")
    return {**schema, "additionalProperties": True}


def payload_errors(name: str, payload: Any) -> dict[str, Any]:
    """Field name -> messages for what ``payload`` gets wrong for handler ``name`` (empty: accepted).

    Keys the declaration does not name pass through to the handler untouched; the payload is stored as submitted.
    """
    declared = payload_serializer(name)
    if declared is None:
        return _any_object_errors(payload)
    return _serializer_errors(declared(data=payload))


def payload_checker(name: str) -> Callable[[Any], dict[str, Any]]:
    """``payload_errors`` of handler ``name`` for many payloads (a batch): one serializer checks each in turn.

    A new serializer per payload deep-copies its declared fields, which costs more than the check itself; this one
    is given each payload as its data and forgets the previous one's outcome, so each answer is that of a new one.
    """
    declared = payload_serializer(name)
    if declared is None:
        return _any_object_errors
    serializer = declared()

    def errors(payload: Any) -> dict[str, Any]:
        serializer.initial_data = payload
        for kept in ("_validated_data", "_errors"):  # what is_valid() kept of the previous payload
            serializer.__dict__.pop(kept, None)
        return _serializer_errors(serializer)

    return errors


def _any_object_errors(payload: Any) -> dict[str, Any]:
    """A handler without a declaration accepts any JSON object."""
    return {} if isinstance(payload, dict) else {"non_field_errors": ["Expected a JSON object."]}


def _serializer_errors(serializer: Any) -> dict[str, Any]:
    if serializer.is_valid():
        return {}
    errors: dict[str, Any] = json.loads(json.dumps(serializer.errors))
    return errors
