"""JSON as SQLite holds it: the project's backend writes a JSON field's text without the space after each ``,`` and
``:`` (``crux.db.base.DatabaseOperations.adapt_json_value``), a byte less per item and key of every task's payload,
result and metadata (a history row's details: compact, then deflated, by their own field). Values read back, compare
and filter as they did, whichever form a row holds (rows written before keep Django's spaced text). PostgreSQL's
``jsonb`` keeps no text and is not concerned."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection

from tasks.models import DeflatedJSONField, Task, TaskHistory
from tasks.selectors import verify_audit_chains

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite keeps a JSON value's text as written"),
]

# Values whose text has every separator kind, nesting, empty containers, strings holding ", " and ": " (which
# must stay as they are), escapes, non-ASCII text, numbers of each kind, true/false/null.
VALUES = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, -3e-7, True, False, None], "c": {"d": {}, "e": []}},
    {"text": 'a, b: c, "d": e', "key: with, separators": "x"},
    {"caf\u00e9": "\u65e5\u672c\u8a9e \U0001f600", "tab\tnew\nline": "back\\slash"},
    [{"nested": [[], [{}], [1, [2, [3]]]]}],
    "a string, with: separators",
    12345678901234567890,
]


def stored_text(model, pk, column: str) -> str:
    with connection.cursor() as cursor:
        key = model._meta.pk.get_db_prep_value(pk, connection)
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [key])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("value", VALUES)
def test_a_json_value_is_stored_compact_and_reads_back_the_same(make_task, value):
    task = make_task(request_payload={"v": value}, metadata={"m": value})
    Task.objects.filter(pk=task.pk).update(partial_results=value)  # a top-level value of every kind, through UPDATE

    assert stored_text(Task, task.pk, "request_payload") == json.dumps({"v": value}, separators=(",", ":"))
    assert stored_text(Task, task.pk, "partial_results") == json.dumps(value, separators=(",", ":"))
    read = Task.objects.get(pk=task.pk)
    assert (read.request_payload, read.metadata, read.partial_results) == ({"v": value}, {"m": value}, value)


def test_a_history_rows_details_are_stored_compact_and_its_chain_verifies(make_task):
    """Their own field writes them compact too, then deflated (``tasks.models.DeflatedJSONField``)."""
    task = make_task(title="first, title: here", metadata={"k": [1, {"x": None}]})
    row = TaskHistory.objects.get(task=task, seq=1)

    with connection.cursor() as cursor:
        cursor.execute("SELECT details FROM tasks_taskhistory WHERE id = %s", [row.pk])
        (stored,) = cursor.fetchone()
    assert isinstance(stored, bytes) and stored.startswith(DeflatedJSONField.TAG)
    text = DeflatedJSONField.stored_text(stored)
    assert ", " not in text.replace("first, title: here", "") and '": ' not in text
    assert json.loads(text) == row.details
    assert list(verify_audit_chains()) == []


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced (written before)"])
def test_json_lookups_match_either_form_of_the_text(make_task, spaced):
    value = {"kind": "report", "tags": ["a", "b"], "depth": {"level": 2}}
    task = make_task(metadata=value)
    other = make_task(metadata={"kind": "other"})
    if spaced:  # as Django's own json.dumps wrote it before this backend
        with connection.cursor() as cursor:
            cursor.execute("UPDATE tasks_task SET metadata = %s WHERE id = %s", [json.dumps(value), task.pk.bytes])
        assert ", " in stored_text(Task, task.pk, "metadata")

    tasks = Task.objects.filter(pk__in=[task.pk, other.pk])
    assert list(tasks.filter(metadata__kind="report")) == [task]
    assert list(tasks.filter(metadata__depth__level=2)) == [task]
    assert list(tasks.filter(metadata__tags__1="b")) == [task]
    assert list(tasks.filter(metadata__has_key="depth")) == [task]
    assert list(tasks.filter(metadata__depth={"level": 2})) == [task]
    assert Task.objects.get(pk=task.pk).metadata == value


def test_a_whole_value_compares_as_written_now(make_task):
    """Django compares a whole JSON value with ``=`` on its text on SQLite (key order counts, as ever): a value
    written now matches the same value given to the lookup, since both are written by the same function."""
    value = {"kind": "report", "tags": ["a", "b"], "depth": {"level": 2}}
    task = make_task(metadata=value)
    make_task(metadata={"kind": "other"})

    assert list(Task.objects.filter(metadata=value)) == [task]
    assert list(Task.objects.filter(metadata__depth={"level": 2})) == [task]


def test_a_fields_own_encoder_is_used_and_its_text_is_compact_too():
    """A JSON field given an encoder (Django's, for times and decimals) writes through it, without spaces too."""
    value = {"at": datetime(2026, 12, 2, 13, 0, tzinfo=UTC), "amount": Decimal("1.50"), "items": [1, 2]}
    text = connection.ops.adapt_json_value(value, DjangoJSONEncoder)
    assert text == json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
    assert json.loads(text) == {"at": "2026-12-02T13:00:00Z", "amount": "1.50", "items": [1, 2]}
    with pytest.raises(TypeError):
        connection.ops.adapt_json_value(value, None)  # no encoder: a time is no JSON, as with json.dumps
