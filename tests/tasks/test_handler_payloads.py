"""Typed handler payloads: each handler's declaration refuses a bad payload at every door (400 keyed by field,
nothing written), accepts a good one, and ``GET /api/handlers`` publishes every declaration as a JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from tasks import services
from tasks.audit import Channel
from tasks.exceptions import InvalidTaskData
from tasks.models import Task, TaskHistory
from tasks.registry import accepts, payload_checker, payload_errors, payload_serializer, registered_names
from tests.api_support import client_for

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db

BUILT_IN = ("agent_demo", "echo", "fail", "sleep")
# A value no scalar field (string, number, integer, boolean) accepts.
NOT_A_SCALAR = {"nested": ["object"]}
GOOD = {
    "echo": {"message": "hello"},
    "sleep": {"seconds": 0.01, "steps": 1},
    "fail": {"message": "on purpose"},
    "agent_demo": {"prompt": "p", "max_iterations": 2, "converge_after": 1, "delay": 0},
}


class StrictCount(serializers.Serializer):
    count = serializers.IntegerField(min_value=1)


@accepts(StrictCount)
def counting(ctx: Any, payload: dict[str, Any]) -> None:
    """A handler registered by a test, declaring its payload."""


def undeclared(ctx: Any, payload: dict[str, Any]) -> None:
    """A handler registered by a test, with no declaration."""


@pytest.fixture
def extra_handlers(settings: Any) -> None:
    settings.TASK_HANDLERS = {
        **settings.TASK_HANDLERS,
        "counting": f"{__name__}.counting",
        "undeclared": f"{__name__}.undeclared",
    }


def bad_payloads(handler: str) -> list[tuple[str, dict[str, Any]]]:
    """(field, payload) for each declared field: a value of the wrong shape, and for bounded numbers one beyond."""
    cases = []
    for name, field in payload_serializer(handler)().fields.items():
        cases.append((name, {name: NOT_A_SCALAR}))
        if getattr(field, "max_value", None) is not None:
            cases.append((name, {name: field.max_value + 1}))
        if getattr(field, "min_value", None) is not None:
            cases.append((name, {name: field.min_value - 1}))
    return cases


def test_every_built_in_handler_declares_a_payload_with_fields() -> None:
    assert set(BUILT_IN) <= set(registered_names())
    for name in registered_names():
        declared = payload_serializer(name)
        assert declared is not None and declared().fields, name


def test_a_batch_checker_answers_every_payload_as_a_new_serializer_does(extra_handlers: None) -> None:
    for handler in registered_names():
        declared = payload_serializer(handler)
        good = GOOD.get(handler, {"count": 2} if handler == "counting" else {})
        bad = [payload for _, payload in bad_payloads(handler)] if declared else []
        payloads: list[Any] = [good, *bad, None, [], "text", good, {}]
        checker = payload_checker(handler)
        # Each payload in turn, a good one after bad ones: no outcome of an earlier payload is kept.
        answers = [checker(payload) for payload in payloads]
        assert answers == [payload_errors(handler, payload) for payload in payloads], handler
        assert answers[0] == answers[-2] == {}, handler
        assert any(answers), handler


@pytest.mark.parametrize("handler", registered_names())
def test_api_refuses_a_bad_payload_naming_the_field_and_writes_nothing(api: Any, handler: str) -> None:
    cases = bad_payloads(handler)
    assert cases, f"{handler} declares no field to check"
    for field, payload in cases:
        response = api.post("/api/tasks/", {"title": "t", "handler": handler, "payload": payload}, format="json")
        assert response.status_code == 400, (handler, payload, response.data)
        assert set(response.json()) == {"payload"} and field in response.json()["payload"], response.json()
    assert Task.objects.count() == 0 and TaskHistory.objects.count() == 0


@pytest.mark.parametrize("handler", registered_names())
def test_api_accepts_a_good_payload(api: Any, handler: str) -> None:
    payload = GOOD[handler]
    response = api.post("/api/tasks/", {"title": "t", "handler": handler, "payload": payload}, format="json")
    assert response.status_code == 201, response.data
    assert Task.objects.get(pk=response.data["id"]).request_payload == payload


def test_the_reported_seconds_abc_answers_400_with_the_message(api: Any) -> None:
    response = api.post("/api/tasks/", {"title": "t", "handler": "sleep", "payload": {"seconds": "abc"}}, format="json")
    assert response.status_code == 400
    assert response.json() == {"payload": {"seconds": ["A valid number is required."]}}


def test_keys_a_declaration_does_not_name_pass_through(api: Any) -> None:
    payload = {"seconds": "0.5", "note": {"free": "form"}}
    response = api.post("/api/tasks/", {"title": "t", "handler": "sleep", "payload": payload}, format="json")
    assert response.status_code == 201, response.data
    assert Task.objects.get(pk=response.data["id"]).request_payload == payload


def test_legacy_solve_checks_the_payload_too(api: Any) -> None:
    response = api.post("/api/v1/solve", {"request": {"max_iterations": "many"}}, format="json")
    assert response.status_code == 400
    assert "max_iterations" in response.json()["payload"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize("service", ["submit_task", "create_task"])
def test_services_refuse_a_bad_payload_before_writing(user: Any, service: str) -> None:
    with pytest.raises(InvalidTaskData) as refused:
        getattr(services, service)(
            owner=user, actor=user, channel=Channel.COMMAND, title="t", handler="sleep", request_payload={"seconds": []}
        )
    assert list(refused.value.errors) == ["payload"] and "seconds" in refused.value.errors["payload"]
    assert "seconds" in str(refused.value)
    assert Task.objects.count() == 0 and TaskHistory.objects.count() == 0


def test_changing_the_handler_checks_the_payload_against_the_new_one(user: Any) -> None:
    task = services.create_task(
        owner=user, actor=user, channel=Channel.COMMAND, title="t", handler="echo", request_payload={"seconds": "x"}
    )
    rows = TaskHistory.objects.count()
    with pytest.raises(InvalidTaskData) as refused:
        services.update_task(task.pk, actor=user, channel=Channel.COMMAND, reason="switch", handler="sleep")
    assert "seconds" in refused.value.errors["payload"]
    task.refresh_from_db()
    assert task.handler == "echo" and TaskHistory.objects.count() == rows


def test_added_handlers_declare_the_same_way_and_undeclared_ones_take_any_object(
    api: Any, extra_handlers: None
) -> None:
    refused = api.post("/api/tasks/", {"title": "t", "handler": "counting", "payload": {"count": 0}}, format="json")
    assert refused.status_code == 400 and "count" in refused.json()["payload"]
    ok = api.post("/api/tasks/", {"title": "t", "handler": "undeclared", "payload": {"any": [1, {}]}}, format="json")
    assert ok.status_code == 201, ok.data


def test_handlers_endpoint_lists_every_handler_with_its_payload_schema(api: Any, extra_handlers: None) -> None:
    response = api.get("/api/handlers")
    assert response.status_code == 200, response.data
    listed = {entry["name"]: entry for entry in response.json()}
    assert sorted(listed) == registered_names()
    sleep = listed["sleep"]["payload_schema"]
    assert sleep["type"] == "object" and sleep["properties"]["seconds"]["type"] == "number"
    assert sleep["properties"]["seconds"]["maximum"] == 3600 and sleep["properties"]["steps"]["minimum"] == 1
    assert listed["counting"]["payload_schema"]["required"] == ["count"]
    assert listed["undeclared"]["payload_schema"] == {"type": "object", "additionalProperties": True}
    assert listed["sleep"]["description"].startswith("Sleep")
    for name in registered_names():
        if payload_serializer(name) is not None:
            assert set(listed[name]["payload_schema"]["properties"]) == set(payload_serializer(name)().fields)


def test_handlers_endpoint_needs_authentication() -> None:
    assert client_for(None).get("/api/handlers").status_code == 401


def test_openapi_schema_documents_the_handlers_endpoint(api: Any) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/handlers"]["get"]
    listed = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["type"] == "array" and listed["items"]["$ref"].endswith("/Handler")
    assert "payload_schema" in schema["components"]["schemas"]["Handler"]["properties"]
