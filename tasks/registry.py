"""The registry of task handlers, named in settings.TASK_HANDLERS (name -> dotted path).

A handler is ``handler(ctx: TaskContext, payload: dict) -> JSON-able result``;
raising records a failure with the error.
"""

from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

Handler = Callable[[Any, dict[str, Any]], Any]


def registered_names() -> list[str]:
    return sorted(settings.TASK_HANDLERS)


@cache
def _load(path: str) -> Handler:
    return import_string(path)


def get_handler(name: str) -> Handler:
    """The handler callable for ``name``; KeyError if it is not registered."""
    return _load(settings.TASK_HANDLERS[name])
