"""The one parser of every endpoint: JSON that the database can store, decided before any view runs.

DRF's JSONParser hands ``json.load`` whatever arrives. That let through what
answered 500 later: ``1e309`` (infinity, refused by the database), ``\\ud800``
(a lone surrogate, which no UTF-8 encoder writes) in a key or a value, NUL
(which PostgreSQL does not store), and nesting deep enough that the C decoder
itself raised RecursionError. Here the body is read up to API_SUBMIT_MAX_BYTES
(a view's ``body_limit`` names a larger one: the batch submit; 413 beyond), its
nesting measured by a linear scan before it is decoded (deeper than
API_JSON_MAX_DEPTH: 400), numbers must be finite (and integers convertible:
typed fields then bound them to their column), and every key and string must be
storable text (tasks.api.fields.unstorable_text). Refusals name the field they
came in as a serializer would: the top-level field and, in a list of objects (a
batch's tasks), the item's index and its field; a body that is not JSON at all,
or not an object, answers ``{"detail": ...}`` since no field applies.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import IO, Any, NoReturn

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser

from tasks.api.fields import unstorable_text


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


BODY_LIMIT = "API_SUBMIT_MAX_BYTES"


def body_limit_of(view: Any) -> str:
    """The setting that bounds a view's request body: its ``body_limit`` (a batch takes more), else
    API_SUBMIT_MAX_BYTES."""
    return getattr(view, "body_limit", BODY_LIMIT)


def body_too_large_message(setting: str = BODY_LIMIT) -> str:
    limit = getattr(settings, setting)
    return f"The request body is larger than {limit} bytes ({setting}); send a smaller payload."


# The characters that open or close a nesting level, delimit a string, escape inside one, end an object's key or
# separate a list's items.
_STRUCTURE = re.compile(r'[\[\]{}":,\\]')


def _printable(name: str) -> str:
    """A key safe to name in an answer even when it is itself unstorable text."""
    return name if unstorable_text(name) is None else name.encode("ascii", "backslashreplace").decode()


def refuse_at(path: Sequence[str | int], message: str) -> NoReturn:
    """Refuse a body for what lies at ``path`` (keys and list indexes from the top), keyed as a serializer keys
    its errors: by the top-level field and, through a list, by the item's index and that item's field (a batch's
    ``{"tasks": {"3": {"title": [...]}}}``). Deeper keys (a payload's own) are reported at that field. ParseError
    when the body is not an object: no field applies."""
    if not path or not isinstance(path[0], str):
        raise ParseError(message)
    named = list(path[:1])
    if len(path) > 1 and isinstance(path[1], int):
        named += path[1:3] if len(path) > 2 and isinstance(path[2], str) else path[1:2]
    detail: Any = [message]
    for step in reversed(named):
        detail = {_printable(step) if isinstance(step, str) else str(step): detail}
    raise ValidationError(detail)


def check_nesting(text: str, limit: int) -> None:
    """400 if the JSON ``text`` nests arrays and objects deeper than ``limit``, naming where (``refuse_at``).

    One pass over the structural characters only (strings skipped), without recursion and before decoding. Each
    open array or object keeps its step: an array the index of its current item (its commas so far), an object
    the span of its current key.
    """
    steps: list[Any] = []
    in_string = False
    skip_to = -1
    string_start = 0
    last_string = (0, 0)  # the span in ``text`` of the last string closed
    for match in _STRUCTURE.finditer(text):
        position, char = match.start(), match.group()
        if position < skip_to:
            continue  # the character after a backslash in a string: escaped
        if in_string:
            if char == "\\":
                skip_to = position + 2
            elif char == '"':
                in_string = False
                last_string = (string_start, position + 1)
        elif char == '"':
            in_string, string_start = True, position
        elif char == ":" and steps:
            steps[-1] = last_string
        elif char == "," and steps and isinstance(steps[-1], int):
            steps[-1] += 1
        elif char in "[{":
            steps.append(0 if char == "[" else None)
            if len(steps) > limit:
                _too_deep(text, steps[:-1], limit)
        elif char in "]}" and steps:
            steps.pop()


def _too_deep(text: str, steps: list[Any], limit: int) -> NoReturn:
    path: list[str | int] = []
    for step in steps[:3]:  # all refuse_at names
        if isinstance(step, tuple):
            try:
                step = json.loads(text[step[0] : step[1]])
            except ValueError:
                break
        if not isinstance(step, (str, int)):
            break
        path.append(step)
    refuse_at(path, f"JSON nested deeper than {limit} levels (API_JSON_MAX_DEPTH).")


# Stands for an integer with more digits than Python converts (sys.get_int_max_str_digits()); refused by name.
_TOO_MANY_DIGITS = object()


def _integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _TOO_MANY_DIGITS


def unstorable(value: Any) -> str | None:
    """Why a decoded JSON ``value`` (not a container) cannot be stored, or None if it can."""
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a number the database stores (NaN, Infinity, or beyond about 1.8e308)."
    if value is _TOO_MANY_DIGITS:
        return "An integer with more digits than any stored number (typed fields hold 64 bits at most)."
    return None


def check_storable(data: Any) -> None:
    """Refuse ``data`` for the first key or value in it, in document order, that cannot be stored, naming where
    (``refuse_at``).

    Iterative, so a wide or deep document never recurses (its depth was bounded before decoding).
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        path, item = stack.pop()
        key = path[-1] if path else None
        if isinstance(key, str) and (problem := unstorable_text(key)) is not None:
            refuse_at(path, problem)
        if isinstance(item, Mapping):
            children: list[tuple[str | int, Any]] = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            problem = unstorable(item)
            if problem is not None:
                refuse_at(path, problem)
            continue
        stack += [((*path, step), child) for step, child in reversed(children)]


class StrictJSONParser(JSONParser):
    """JSON bodies of bounded size and depth, with finite numbers and storable text only."""

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        setting = body_limit_of((parser_context or {}).get("view"))
        limit = getattr(settings, setting)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(body_too_large_message(setting))
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"The body is not valid {encoding} text.") from None
        check_nesting(text, settings.API_JSON_MAX_DEPTH)
        try:
            data = json.loads(text, parse_int=_integer)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check_storable(data)
        return data
