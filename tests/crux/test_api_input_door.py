"""Bad input of any shape, at every JSON endpoint and parameter, answers 4xx JSON naming the field, and writes nothing.

The endpoints and their fields are read from the OpenAPI schema, so a new endpoint, body field or query
parameter is walked without touching this file. Each request carries one hostile value (the rest of the
request valid, so the hostile value is what decides); each answer must be below 500, JSON, keyed by the field
or parameter that carried it, and no task, history row or output may have been written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest.mock import ANY
from urllib.parse import quote, urlencode

import pytest
from django.test import Client, RequestFactory
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIRequestFactory, force_authenticate

from crux.errors import is_api
from tasks.api.parsers import check_nesting, check_storable
from tasks.api.views import TaskListView
from tasks.models import Task, TaskHistory, TaskOutput
from tests.api_support import client_for
from tests.crux.openapi_walk import (
    OPERATIONS,
    SPEC,
    path_parameter,
    request_schema,
    required_query,
    resolve,
    valid_body,
    valid_value,
)

pytest_plugins = ["tests.api_support"]

BIGINT = 2**63


def _id(value: Any) -> str:
    return repr(value)[:40]


class Raw(str):
    """JSON text sent as is (``1e309`` cannot be written by json.dumps)."""


def encode(body: Any) -> bytes:
    """The body as JSON; Raw values spliced in verbatim; lone surrogates and NUL escaped as JSON allows."""
    raws: dict[str, str] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws[f"@raw{len(raws)}@"] = str(value)
            return f"@raw{len(raws) - 1}@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return value

    text = json.dumps(mark(body))  # ensure_ascii: "\ud800" and "\x00" travel as escapes
    for marker, raw in raws.items():
        text = text.replace(json.dumps(marker), raw)
    return text.encode()


DEEP = Raw("[" * 1000 + "]" * 1000)
JUST_TOO_DEEP = Raw("[" * 33 + "]" * 33)
NON_FINITE = [Raw("1e309"), Raw("-1e309"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity")]
BAD_TEXT = ["\x00", "a\x00b", "\ud800", "x\udfff"]
BAD_OBJECTS = [
    {"a": "\x00"},
    {"\x00": 1},
    {"\ud800": 1},
    {"a": ["ok", {"b": "\udc00"}]},
    {"a": DEEP},
    {"a": JUST_TOO_DEEP},
    *({"a": value} for value in NON_FINITE),
]


def hostile_values(schema: dict[str, Any]) -> list[Any]:
    """Values a field of this schema must refuse."""
    schema = resolve(schema)
    kind = schema.get("type")
    if kind == "integer":
        maximum, minimum = schema.get("maximum", BIGINT - 1), schema.get("minimum", -BIGINT)
        return [
            maximum + 1,
            minimum - 1,
            BIGINT,
            -BIGINT - 1,
            2**64,
            Raw("9" * 5000),
            1.5,
            "5",
            "\u0663",
            True,
            *NON_FINITE,
        ]
    if kind == "number":
        bounds = [schema["maximum"] + 1] if "maximum" in schema else []
        bounds += [schema["minimum"] - 1] if "minimum" in schema else []
        return [*bounds, Raw("9" * 5000), "5", "\u0663", True, [], *NON_FINITE]
    if kind == "boolean":
        return ["true", 1, "yes", *NON_FINITE]
    if kind == "object":
        return [[], "x", *BAD_OBJECTS]
    # Strings, and enums (whose schema may carry no type).
    values: list[Any] = [*BAD_TEXT, 5, [], {}, *NON_FINITE]
    if "maxLength" in schema:
        values.append("x" * (schema["maxLength"] + 1))
    if "enum" in schema:
        values += [f"{schema['enum'][0]}\x00", f"{schema['enum'][0]}\n"]
    return values


@pytest.fixture
def door(db: Any, settings: Any, superuser: Any, task_in: Any) -> Iterator[Any]:
    """A superuser's client (it may call every operation) and, per path, a task that a valid request would change."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"submit": "100000/minute", "read": "100000/minute"},
    }
    tasks = {
        "restore": task_in("failed", owner=superuser, deleted=True),
        "running": task_in("running", owner=superuser),
        "failed": task_in("failed", owner=superuser),
    }

    class Door:
        client = client_for(superuser)
        user = superuser

        def task_for(self, path: str) -> Task:
            if path.endswith("/restore"):
                return tasks["restore"]
            return tasks["running"] if path.endswith("/cancel") or "/v1/jobs/" in path else tasks["failed"]

        def url(self, path: str, *, task_id: str | None = None, query: dict[str, str] | None = None) -> str:
            name = path_parameter(path)
            if name:
                value = task_id if task_id is not None else str(self.task_for(path).pk)
                path = path.replace(f"{{{name}}}", quote(value, safe="", errors="surrogatepass"))
            return f"{path}?{urlencode(query)}" if query else path

        def send(self, method: str, url: str, body: bytes = b"") -> Any:
            return self.client.generic(method.upper(), url, body, content_type="application/json")

    yield Door()


def rows() -> tuple[int, int, int, list[Any]]:
    return (
        Task.objects.count(),
        TaskHistory.objects.count(),
        TaskOutput.objects.count(),
        list(Task.objects.order_by("pk").values_list("state", "deleted_at", "history_count")),
    )


def check(response: Any, *, key: str | None, label: str) -> list[str]:
    """What is wrong with an answer to a hostile request (empty if nothing)."""
    problems = []
    if response.status_code >= 500:
        problems.append(f"{label}: {response.status_code}")
    if not response["Content-Type"].startswith("application/json"):
        return [*problems, f"{label}: not JSON ({response['Content-Type']})"]
    body = response.json()
    if response.status_code == 400 and key is not None and key not in body:
        problems.append(f"{label}: 400 not keyed by {key!r}: {body}")
    if response.status_code == 400 and not all(
        (isinstance(v, list) and all(isinstance(m, str) for m in v)) or (k == "detail" and isinstance(v, str))
        for k, v in body.items()
    ):
        problems.append(f"{label}: 400 body not field-keyed: {body}")
    return problems


BODY_OPERATIONS = [(p, m, o) for p, m, o in OPERATIONS if request_schema(o) is not None]


@pytest.mark.parametrize(
    ("path", "method", "operation"), BODY_OPERATIONS, ids=[f"{m} {p}" for p, m, _ in BODY_OPERATIONS]
)
def test_hostile_body_fields_are_refused_by_name(door: Any, path: str, method: str, operation: dict[str, Any]) -> None:
    schema = request_schema(operation)
    assert schema is not None
    base = valid_body(schema)
    url = door.url(path, query=required_query(operation))
    before = rows()
    problems = []
    for name, field in schema.get("properties", {}).items():
        for value in hostile_values(field):
            response = door.send(method, url, encode({**base, name: value}))
            label = f"{name}={_id(value)}"
            problems += check(response, key=name, label=label)
            if response.status_code not in (400, 413):
                problems.append(f"{label}: accepted ({response.status_code})")
    assert not problems, problems
    assert rows() == before


WHOLE_BODIES = [
    DEEP,
    JUST_TOO_DEEP,
    *NON_FINITE,
    Raw('{"a": 1'),
    Raw("[]"),
    Raw('"\\ud800"'),
    Raw('["\\u0000"]'),
    Raw("{}" * 2),
    Raw('{"\\ud800": 1}'),
    Raw('{"\\u0000": 1}'),
]


def test_hostile_whole_bodies_are_refused_at_every_endpoint(door: Any) -> None:
    before = rows()
    problems = []
    for path, method, operation in BODY_OPERATIONS:
        url = door.url(path, query=required_query(operation))
        for body in [*(encode(b) for b in WHOLE_BODIES), b'{"title": "\xed\xa0\x80"}', b"\xff\xfe{}"]:
            response = door.send(method, url, body)
            label = f"{method} {path} {_id(body)}"
            problems += check(response, key=None, label=label)
            if response.status_code != 400:
                problems.append(f"{label}: answered {response.status_code}, not 400")
    assert not problems, problems
    assert rows() == before


HOSTILE_QUERY = [
    "\u0663",
    "5\n",
    " 5",
    "+5",
    "1_000",
    "1e309",
    "NaN",
    "-Infinity",
    "2026-01-01",
    "2026-01-01\n",
    "2026-01-01T00:00:00Z\n",
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
    "\x00",
    "a\x00b",
    str(BIGINT),
    str(-BIGINT - 1),
    str(2**64),
    "9" * 5000,
    "true\n",
    "/",
    "",
]


def typed(schema: dict[str, Any]) -> bool:
    """A parameter no HOSTILE_QUERY value is valid for: a number, boolean, date-time or choice (or a list of them)."""
    items = resolve(schema.get("items", {}))
    return (
        schema.get("type") in ("integer", "boolean")
        or "date-time" == schema.get("format")
        or "enum" in schema
        or ("enum" in items)
    )


QUERY_OPERATIONS = [(p, m, o) for p, m, o in OPERATIONS if any(q["in"] == "query" for q in o.get("parameters", []))]


@pytest.mark.parametrize(
    ("path", "method", "operation"), QUERY_OPERATIONS, ids=[f"{m} {p}" for p, m, _ in QUERY_OPERATIONS]
)
def test_hostile_query_values_answer_4xx_json_by_name(
    door: Any, path: str, method: str, operation: dict[str, Any]
) -> None:
    params = {p["name"]: resolve(p["schema"]) for p in operation["parameters"] if p["in"] == "query"}
    before = rows()
    problems = []
    for name, schema in params.items():
        for value in HOSTILE_QUERY:
            query = {**required_query(operation), name: value}
            response = door.send(method, door.url(path, query=query))
            label = f"{name}={value[:20]!r}"
            problems += check(response, key=name, label=label)
            if typed(schema) and response.status_code != 400:
                problems.append(f"{label}: a number, date, boolean or choice accepted ({response.status_code})")
    assert not problems, problems
    assert rows() == before


@pytest.mark.parametrize(
    ("path", "method", "operation"), QUERY_OPERATIONS, ids=[f"{m} {p}" for p, m, _ in QUERY_OPERATIONS]
)
def test_a_repeated_parameter_is_refused_by_name_or_merged_if_a_list(
    door: Any, path: str, method: str, operation: dict[str, Any]
) -> None:
    """``?limit=5&limit=500`` is never read as one of its values; ``?states=a&states=b`` means ``states=a,b``."""
    params = {p["name"]: resolve(p["schema"]) for p in operation["parameters"] if p["in"] == "query"}
    before = rows()
    problems = []
    for name, schema in params.items():
        query = required_query(operation)
        if schema.get("type") == "array":
            values = [str(v) for v in resolve(schema["items"]).get("enum", ["x", "y"]) if v is not None][:2]
            repeated = door.send(method, door.url(path, query=query) + ("&" if query else "?") + urlencode(
                [(name, value) for value in values]
            ))  # fmt: skip
            joined = door.send(method, door.url(path, query={**query, name: ",".join(values)}))
            problems += check(repeated, key=name, label=f"{name} repeated")
            if (repeated.status_code, repeated.content) != (joined.status_code, joined.content):
                problems.append(f"{name}: repeated keys answered differently from the comma-separated list")
            continue
        value = str(valid_value(schema)).lower()
        query = {key: item for key, item in query.items() if key != name}
        url = door.url(path, query=query) + ("&" if query else "?") + urlencode([(name, value), (name, value)])
        response = door.send(method, url)
        problems += check(response, key=name, label=f"{name} twice")
        if response.status_code != 400 or name not in response.json():
            problems.append(f"{name} given twice: answered {response.status_code} {response.content[:200]!r}")
    assert not problems, problems
    assert rows() == before


HOSTILE_IDS = ["\u0663" * 32, "abc/def", "abc%2Fdef", "x\x00", "\ud800", "1" * 5000, str(BIGINT), " ", "..", "{id}\n"]


def test_hostile_ids_answer_400_or_404_json_at_every_endpoint(door: Any) -> None:
    before = rows()
    problems = []
    for path, method, operation in OPERATIONS:
        name = path_parameter(path)
        if name is None:
            continue
        real = str(door.task_for(path).pk)
        for value in [*HOSTILE_IDS, f"\uff11{real[1:]}", f"{{{real}}}", f"urn:uuid:{real}"]:
            value = value.replace("{id}", real)
            response = door.send(method, door.url(path, task_id=value, query=required_query(operation)))
            label = f"{method} {path} {_id(value)}"
            problems += check(response, key=name, label=label)
            if response.status_code not in (400, 404):
                problems.append(f"{label}: answered {response.status_code}")
    assert not problems, problems
    assert rows() == before


# --- The parser's depth measure: linear, never recursive, strings do not count.


def test_nesting_is_measured_without_recursion() -> None:
    check_nesting("[" * 32 + "]" * 32, 32)
    check_nesting('{"a": "' + "[" * 100 + '"}', 1)  # brackets in a string are text
    check_nesting('{"a": "\\"[[[[", "b": "\\\\"}', 1)  # escaped quote and backslash end where they should
    for text in ("[" * 33, '{"a": "\\\\", "b": [[[]]]}', "[" * 1_000_000):
        with pytest.raises(Exception, match="API_JSON_MAX_DEPTH"):
            check_nesting(text, 2 if "b" in text else 32)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"payload": {"a": [[[[]]]]}}', {"payload": ANY}),
        ('{"tasks": [{"t": "x,y]}", "u": [1, 2]}, {"v": 0, "payload": [[[[]]]]}]}', {"tasks": {"1": {"payload": ANY}}}),
        ('{"tasks": [1, [[[[]]]]]}', {"tasks": {"1": ANY}}),
        ('{"ids": ["a", "b\\"\\",", "c", "\\u0000"]}', {"ids": {"3": ANY}}),
        ('{"tasks": [{"a": "ok"}, {"b": {"c": ["\\u0000"]}}]}', {"tasks": {"1": {"b": ANY}}}),
        ('{"a": "\\u0000", "b\\u0000": 1}', {"a": ANY}),  # the first in document order
        ('{"a": 1, "b\\u0000": "\\u0000"}', {"b\x00": ANY}),  # a key before its value
    ],
)
def test_a_refusal_names_the_field_and_item_it_came_in(text: str, where: dict) -> None:
    with pytest.raises(ValidationError) as refused:
        check_nesting(text, 4)
        check_storable(json.loads(text))
    assert refused.value.detail == where


def test_a_body_at_the_depth_limit_is_stored(door: Any) -> None:
    nested = Raw('{"a": ' + "[" * 30 + "]" * 30 + "}")  # the body, payload and 30 lists: 32 levels
    response = door.send("post", "/api/tasks/", encode({"title": "deep but allowed", "payload": nested}))
    assert response.status_code == 201, response.json()


# --- Every error under /api/ is JSON; both slash forms answer; sizes are refused before anything runs.


def routes() -> list[str]:
    """Every GET path of the schema, with a task id filled in."""
    return [p for p, ops in SPEC["paths"].items() if "get" in ops and not p.startswith(("/api/docs", "/api/health"))]


def test_both_slash_forms_answer_the_same_without_redirect(door: Any) -> None:
    for path in routes():
        url = door.url(path)
        other = url[:-1] if url.endswith("/") else f"{url}/"
        canonical, alternative = door.client.get(url), door.client.get(other)
        assert alternative.status_code == canonical.status_code != 301, (url, other, alternative.status_code)
    created = door.send("post", "/api/tasks", encode({"title": "no slash"}))
    assert created.status_code == 201 and Task.objects.filter(title="no slash").exists()


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("get", "/api/nowhere", 404),
        ("get", "/api/tasks/abc%2Fdef", 404),
        ("post", "/api/tasks/persistent/x/y", 404),
        ("get", "/api", 200),
        ("put", "/api/tasks/", 405),
        ("patch", "/api/auth/login/", 405),
        ("delete", "/api/schema/", 405),
    ],
)
def test_every_answer_under_api_is_json(door: Any, method: str, url: str, status: int) -> None:
    response = getattr(door.client, method)(url)
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json") and response.json()


def test_a_disallowed_host_is_400_json(db: Any) -> None:
    response = Client().get("/api/tasks/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_an_oversized_body_is_413_json_at_every_endpoint(door: Any, settings: Any) -> None:
    settings.API_SUBMIT_MAX_BYTES = settings.API_BATCH_MAX_BYTES = 100
    before = rows()
    body = encode({"reason": "x" * 200})
    for path, method, operation in OPERATIONS:
        response = door.send(method, door.url(path, query=required_query(operation)), body)
        assert response.status_code == 413, (method, path, response.content)
        limit = "API_BATCH_MAX_BYTES" if path == "/api/tasks/batch" else "API_SUBMIT_MAX_BYTES"
        assert limit in response.json()["detail"], (path, response.json())
    assert rows() == before


def test_the_parser_reads_no_more_than_the_limit(door: Any, settings: Any) -> None:
    """Reached without the middleware's check of the declared length, the parser still refuses (413)."""
    settings.API_SUBMIT_MAX_BYTES = 100
    request = APIRequestFactory().post("/api/tasks/", encode({"title": "x" * 200}), content_type="application/json")
    force_authenticate(request, user=door.user)
    assert TaskListView.as_view()(request).status_code == 413
    assert rows()[0] == 3


def test_an_unhandled_exception_is_a_logged_json_500(door: Any, monkeypatch: Any, caplog: Any) -> None:
    def broken(task_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("crux.api.views.locate", broken)
    client = Client(raise_request_exception=False)
    client.force_login(door.user)
    response = client.get(door.url("/api/tasks/{task_id}/locate"))
    assert response.status_code == 500 and response.json() == {"detail": "Internal server error; it has been logged."}
    assert any("a bug" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_is_api_covers_the_root_and_below_only() -> None:
    factory = RequestFactory()
    assert [is_api(factory.get(p)) for p in ("/api", "/api/", "/api/tasks/", "/apis", "/admin/")] == [
        True,
        True,
        True,
        False,
        False,
    ]
