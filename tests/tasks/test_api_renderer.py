"""Responses are written by orjson (``tasks.api.renderers.OrjsonRenderer``) as DRF's JSONRenderer writes them.

What orjson writes as DRF does is compared byte for byte with DRF's renderer; what it would write otherwise, or
refuses, is shown to be DRF's own rendering; floats compare as the same numbers.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from tasks.api.renderers import OrjsonRenderer
from tasks.states import TaskState

pytest_plugins = ["tests.api_support"]

JSON = "application/json"


@dataclass
class Point:
    x: int


def both(data: Any, accepted: str = JSON) -> tuple[bytes, bytes]:
    return OrjsonRenderer().render(data, accepted, {}), JSONRenderer().render(data, accepted, {})


@pytest.mark.parametrize(
    "data",
    [
        {"results": [{"id": str(uuid.UUID(int=7)), "title": "t", "count": 3, "done": True, "none": None}]},
        'text with \x00 \x01 \x1f \x7f " \\ / \b \f \n \r \t',
        "non-ASCII: \u00e9quipe \u4e2d\u6587 \U0001f600, and U+2028 \u2028 and U+2029 \u2029",
        [2**63 - 1, -(2**63), 0, -1, [], {}, [[[]]], {"": ""}],
        {"state": TaskState.RUNNING, "uuid": uuid.UUID(int=1), "tuple": (1, "two")},
    ],
    ids=["page", "control characters", "non-ASCII and line separators", "integers and nesting", "str enum, UUID"],
)
def test_what_orjson_writes_is_drfs_bytes(data: Any) -> None:
    ours, drfs = both(data)
    assert ours == drfs


@pytest.mark.parametrize(
    "data",
    [
        {"at": datetime(2026, 12, 4, 16, 30, 6, 123456, tzinfo=UTC)},
        {"on": date(2026, 12, 4), "time": time(16, 30, 6, 500)},
        {"amount": Decimal("1.10")},
        {"lazy": gettext_lazy("Not found.")},
        {"set": {1}},
        {1: "an integer key"},
        {"big": 2**64},
    ],
    ids=["datetime", "date and time", "Decimal", "lazy text", "set", "integer key", "integer past 64 bits"],
)
def test_what_orjson_would_write_otherwise_or_refuses_is_drfs_to_render(data: Any) -> None:
    ours, drfs = both(data)
    assert ours == drfs
    assert json.loads(ours)  # rendered, not dropped


def test_an_indented_response_is_drfs() -> None:
    data = {"a": [1, {"b": 2}]}
    ours, drfs = both(data, f"{JSON}; indent=4")
    assert ours == drfs
    assert b"\n    " in ours


def test_floats_are_the_same_numbers() -> None:
    floats = [0.1, 1.5e-7, 1e16, 1e300, -0.0, 5e-324, 1 / 3, 123456789.125]
    ours, drfs = both(floats)
    assert json.loads(ours) == json.loads(drfs) == floats


def test_nan_and_infinities_are_written_as_null_where_drf_refuses_them() -> None:
    assert OrjsonRenderer().render([float("nan"), float("inf"), -float("inf")], JSON, {}) == b"[null,null,null]"
    with pytest.raises(ValueError):
        JSONRenderer().render([float("nan")], JSON, {})


@pytest.mark.parametrize(
    ("data", "refusal"),
    [({"lone": "\ud800"}, UnicodeEncodeError), ({"point": Point(1)}, TypeError)],
    ids=["text that is not UTF-8", "a dataclass, which orjson writes and DRF does not"],
)
def test_what_drf_refuses_is_refused(data: Any, refusal: type[Exception]) -> None:
    for renderer in (OrjsonRenderer(), JSONRenderer()):
        with pytest.raises(refusal):
            renderer.render(data, JSON, {})


@pytest.mark.django_db
def test_the_api_answers_through_it(api: Any, task_in: Any) -> None:
    task_in("completed", title="rendered \u2028", metadata={"x": [1, 2.5, None]})
    response = api.get("/api/tasks/persistent")
    assert response.status_code == 200
    assert isinstance(response.accepted_renderer, OrjsonRenderer)
    assert response.content == JSONRenderer().render(response.data, JSON, {})
    assert b"\\u2028" in response.content
