"""The OpenAPI schema: shared parameters, and post-processing that says in the schema what the API enforces."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from tasks.api.filters import NO_EMPTY_ITEM

TASK_ID = OpenApiParameter(
    "task_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id (a malformed id answers 400)."
)


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
