"""A task's JSON values are read by orjson (``tasks.models.loads_json``, ``FastJSONField``) as ``json`` reads them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from django.db import connection, models
from django.db.models.functions import Cast

from tasks import services
from tasks.audit import Channel
from tasks.models import FastJSONField, Task, TaskHistory, loads_json

TEXTS = [
    '{"a":1,"b":[1,2.5,true,false,null],"c":{"d":"\\u00e9\\n"}}',
    '{"a": 1, "a": 2}',  # a key twice: the last one
    "[]",
    "{}",
    '"text"',
    "0.1",
    "1e16",
    "-0.0",
    "123456789012345678901234567890",  # past 64 bits: json's
    "[18446744073709551616,-9223372036854775809]",  # just past 64 bits either way
    "[9223372036854775807,-9223372036854775808,18446744073709551615]",  # the 64-bit bounds
    '"1234567890123456789012"',  # nineteen digits or more in a text
    "0.12345678901234567890123",
    "NaN",  # json's only
    "[Infinity,-Infinity]",
    "1e400",  # out of a float's range: json's infinity
    '"\\ud800"',  # a lone surrogate: json's only
    "  [1]  ",
]


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types at every level, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.mark.parametrize("text", TEXTS)
def test_loads_json_reads_what_json_reads(text: str) -> None:
    assert same(loads_json(text), json.loads(text))


@pytest.mark.parametrize("text", ["", "{", "abc", "[1,]", "{'a': 1}"])
def test_text_that_is_not_json_is_refused_as_json_refuses_it(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_json(text)


@pytest.mark.parametrize("text", [*TEXTS, "abc", None])
def test_the_field_reads_a_column_as_djangos_jsonfield_does(text: str | None) -> None:
    ours = FastJSONField().from_db_value(text, None, connection)
    djangos = models.JSONField().from_db_value(text, None, connection)
    assert same(ours, djangos)


def test_a_tasks_json_columns_are_read_by_it_and_migrations_see_djangos_jsonfield() -> None:
    for name in ("acceptance_criteria", "metadata", "result", "partial_results", "request_payload"):
        field = Task._meta.get_field(name)
        assert type(field) is FastJSONField
        assert field.deconstruct()[1] == "django.db.models.JSONField"


@pytest.mark.django_db
def test_values_come_back_from_the_database_as_saved(user: Any) -> None:
    metadata = {"big": 2**70, "small": -(2**63), "f": [0.1, 1e16, 1.5e-7], "s": "\u00e9\u2028\x7f", "n": None}
    criteria = {"tests": ["pass", {"nested": [1, 2.5, True, None]}]}
    task = services.submit_task(
        owner=user,
        actor=user,
        channel=Channel.API,
        title="json",
        metadata=metadata,
        acceptance_criteria=criteria,
        run_at=None,
    )
    read = Task.objects.get(pk=task.pk)
    stored = Task.objects.filter(pk=task.pk).values_list(Cast("metadata", models.TextField()), flat=True).get()
    assert same(read.metadata, json.loads(stored))  # as stored: PostgreSQL's jsonb orders keys, writes 1e16 as 10^16
    assert {key: read.metadata[key] for key in ("big", "small", "s", "n")} == {
        key: metadata[key] for key in ("big", "small", "s", "n")
    }
    assert type(read.metadata["big"]) is int
    assert same(read.acceptance_criteria, criteria)
    created = TaskHistory.objects.filter(task_id=task.pk).earliest("seq")
    assert same(created.details["changes"]["metadata"], metadata)
