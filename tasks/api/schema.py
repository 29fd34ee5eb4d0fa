"""The OpenAPI schema: shared parameters, and post-processing that says in the schema what the API enforces."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from tasks.api.filters import NO_EMPTY_ITEM

TASK_ID = OpenApiParameter(
    "task_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id (a malformed id answers 400)."
)


class CruxAutoSchema(AutoSchema):
    """drf-spectacular's, plus the JSON body a DELETE declares with ``extend_schema(request=...)``.

    drf-spectacular documents bodies of PUT, PATCH and POST only; the reason of a soft delete (and of the legacy
    cancel) travels in a DELETE's body, because a URL is logged (``tasks.api.middleware``).
    """

    def _get_request_body(self, direction: str = "request") -> Any:
        if self.method != "DELETE" or self.get_request_serializer() is None:
            return super()._get_request_body(direction)
        self.method = "POST"  # the one method check in drf-spectacular's body builder
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"


def closed_request_bodies(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every request body of this API refuses unknown fields (RejectUnknownFieldsMixin): additionalProperties false."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result


def non_empty_enum_lists(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """``states`` and ``ordering`` refuse an empty list (it reads as one empty item): minItems 1."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in NO_EMPTY_ITEM:
                    parameter["schema"]["minItems"] = 1
    return result


# No text column stores NUL (tasks.api.fields.unstorable_text): every string input says so.
NO_NUL = "^[^\\x00]*$"


def _refuses_nul(schema: dict[str, Any]) -> None:
    if schema.get("type") == "string" and not {"format", "enum", "pattern"} & set(schema):
        schema["pattern"] = NO_NUL


def storable_strings(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every string a client sends (request body fields, query, path and header parameters) refuses NUL: a pattern."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            for prop in component.get("properties", {}).values():
                _refuses_nul(prop)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _refuses_nul(parameter["schema"])
                _refuses_nul(parameter["schema"].get("items", {}))
    return result


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (API_RETRY_AFTER_SECONDS for a 503).",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def retry_after_headers(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every 429 and 503 answer carries Retry-After: the schema declares the header."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for code in ("429", "503"):
                if code in operation.get("responses", {}):
                    operation["responses"][code]["headers"] = _RETRY_AFTER
    return result


def _name_descending(schema: dict[str, Any]) -> None:
    values = schema.get("enum") or []
    if any(isinstance(value, str) and value.startswith("-") for value in values):
        schema["x-enum-varnames"] = [
            value[1:].upper() + "_DESC" if value.startswith("-") else value.upper() for value in values
        ]


def descending_enum_names(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Orderings name their descending values (``-created_at``: ``CREATED_AT_DESC``) for client generators,
    which otherwise number them (``VALUE_0``): ``x-enum-varnames``, read by openapi-python-client and others."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _name_descending(parameter["schema"])
                _name_descending(parameter["schema"].get("items", {}))
    for component in result.get("components", {}).get("schemas", {}).values():
        _name_descending(component)
    return result
