"""A history row's details stored deflated against the audit's vocabulary (``tasks.models.DeflatedJSONField``), read
back as the value they were by every way of reading history, on both engines; the chain covers the value, so it
verifies whatever form a row holds.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.exceptions import FieldError
from django.db import connection

from tasks import db_triggers, services
from tasks.audit import Channel
from tasks.models import HISTORY_DETAILS_DICTIONARY, DeflatedJSONField, TaskHistory
from tasks.records import serialize_queryset
from tasks.selectors import verify_audit_chains
from tests.api_support import client_for

pytestmark = pytest.mark.django_db

FIELD = TaskHistory._meta.get_field("details")


def stored(row_id: int) -> bytes | str:
    """A history row's details as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT details FROM tasks_taskhistory WHERE id = %s", [row_id])
        value = cursor.fetchone()[0]
    return bytes(value) if isinstance(value, memoryview) else value


def rewrite(row_id: int, value: bytes | str) -> None:
    """Store ``value`` as a row's details, the append-only triggers lifted meanwhile (what an older schema wrote)."""
    db_triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_taskhistory SET details = %s WHERE id = %s", [value, row_id])
    db_triggers.install(connection)


@pytest.fixture
def task(user):
    task = services.submit_task(
        owner=user,
        actor=user,
        channel=Channel.API,
        title="nightly export of the billing report",
        description="Export the report and upload it; résumé of the run in the log.",
        role="backend",
        provider="openai",
        model="gpt-x",
        metadata={"team": "billing"},
    )
    services.claim(task.pk, worker_id="celery@host-1:10:11")
    return task


def test_the_dictionary_never_changes():
    """Rows deflated against it can be read with these very bytes only: a new dictionary takes a new tag."""
    assert DeflatedJSONField.TAG == b"\x01"
    assert hashlib.sha256(HISTORY_DETAILS_DICTIONARY).hexdigest() == (
        "4f4aa9b2c71196e47de0581142de91ef5e5098697f62b6b3465ea5e9aaccaf7f"
    )


def test_a_tasks_details_are_stored_deflated_and_read_back(task):
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    assert [row.details["changes"].get("worker_id") for row in rows] == [None, ["", "celery@host-1:10:11"]]
    for row in rows:
        held = stored(row.pk)
        text = json.dumps(row.details, separators=(",", ":"), ensure_ascii=False).encode()
        assert isinstance(held, bytes) and held.startswith(DeflatedJSONField.TAG)
        assert len(held) < len(text) * 0.6, f"seq {row.seq}: {len(held)} of {len(text)} bytes"
    assert TaskHistory.objects.get(pk=rows[0].pk).details["changes"]["description"] == task.description
    assert list(verify_audit_chains()) == []


def test_details_that_deflating_would_not_shorten_are_stored_as_their_text(task):
    """``{}`` (an edit of untracked fields asked for its event) is two bytes: its stream would be longer."""
    assert FIELD.get_db_prep_value({}, connection) == ("{}" if connection.vendor == "sqlite" else b"{}")


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "as Django wrote it"])
def test_a_row_written_as_json_text_reads_back_and_verifies(task, spaced):
    """Rows written before hold JSON text (on PostgreSQL, jsonb's text as bytes): the same value, the same links."""
    row = TaskHistory.objects.filter(task=task).order_by("seq").first()
    text = json.dumps(row.details, separators=(", ", ": ") if spaced else (",", ":"), ensure_ascii=False)
    rewrite(row.pk, text if connection.vendor == "sqlite" else text.encode())
    assert stored(row.pk) in (text, text.encode())
    assert TaskHistory.objects.get(pk=row.pk).details == row.details
    assert list(verify_audit_chains()) == []


def test_a_forged_deflated_value_is_named_by_verify_audit(task):
    row = TaskHistory.objects.filter(task=task).order_by("seq").first()
    forged = {**row.details, "changes": {**row.details["changes"], "title": "forged"}}
    rewrite(row.pk, FIELD.get_db_prep_value(forged, connection))
    assert TaskHistory.objects.get(pk=row.pk).details["changes"]["title"] == "forged"
    problems = [str(p) for p in verify_audit_chains()]
    assert problems and f"task {task.pk} seq 1: row edited" in problems[0]


def test_every_read_of_the_history_gives_the_details_back(task, user):
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq"))
    expected = [row.details for row in rows]
    assert [v for (v,) in TaskHistory.objects.filter(task=task).order_by("seq").values_list("details")] == expected
    backed_up = [row["fields"]["details"] for row in serialize_queryset(TaskHistory.objects.filter(task=task))]
    assert backed_up == expected
    response = client_for(user).get(f"/api/tasks/history/{task.pk}")
    assert response.status_code == 200
    assert [entry["details"] for entry in response.json()["results"]] == expected


@pytest.mark.parametrize("lookup", ["details__changes__title", "details", "details__contains", "details__has_key"])
def test_a_filter_on_the_details_is_refused_on_both_engines(task, lookup):
    """A deflated value holds nothing SQL can look into: a filter would miss those rows, so it fails loudly."""
    value = "changes" if lookup.endswith("has_key") else {"changes": {}} if lookup != "details__changes__title" else "x"
    with pytest.raises(FieldError):
        list(TaskHistory.objects.filter(**{lookup: value}))
