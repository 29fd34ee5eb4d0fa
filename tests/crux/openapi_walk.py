"""The API as its OpenAPI schema describes it, for tests that walk every operation (new ones included).

It holds no assertions (PYTEST_DONT_REWRITE).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.generators import SchemaGenerator

SPEC = SchemaGenerator().get_schema(request=None, public=True)
# Every operation but the schema (YAML by default), the docs (HTML) and health (which answers 503 by design while
# a part, such as the worker, is down, and takes no input).
OPERATIONS = [
    (path, method, operation)
    for path, operations in SPEC["paths"].items()
    for method, operation in operations.items()
    if not path.startswith(("/api/schema", "/api/docs", "/api/health"))
]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema with its $ref (or a single allOf/oneOf $ref besides null) followed."""
    for key in ("allOf", "oneOf"):
        refs = [s for s in schema.get(key, []) if "$ref" in s]
        if refs:
            schema = {**schema, **resolve(refs[0])}
    if "$ref" in schema:
        return resolve(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    return schema


def valid_value(schema: dict[str, Any]) -> Any:
    schema = resolve(schema)
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    if schema.get("type") == "array":
        return [valid_value(schema["items"])]
    if schema.get("type") == "object":
        return valid_body(schema) if "properties" in schema else {}
    return {"integer": max(schema.get("minimum", 1), 1), "boolean": True}.get(schema.get("type"), "x")


def request_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return resolve(content["schema"]) if content else None


def valid_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {name: valid_value(schema["properties"][name]) for name in schema.get("required", [])}


def required_query(operation: dict[str, Any]) -> dict[str, str]:
    """The required query parameters with valid values (``confirm=true``), so that only the hostile value fails."""
    return {
        p["name"]: str(valid_value(p["schema"])).lower()
        for p in operation.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }


def path_parameter(path: str) -> str | None:
    return next((name for name in ("task_id", "job_id") if f"{{{name}}}" in path), None)
