"""An output's content compressed where that pays (``tasks.models.CompressedTextField``), read back as the text it
was by every way of reading outputs, on both engines.

A content of 256 bytes or more of UTF-8 is stored as a NUL and its zlib stream when that is at most 7/8 of them,
anything else as its text: SQLite's column holds TEXT or a BLOB, PostgreSQL's is ``bytea`` (the text as its UTF-8).
No filter but ``isnull`` takes the column.
"""

from __future__ import annotations

import importlib
import json
import random
import string
import zlib

import pytest
from django.apps import apps
from django.core.exceptions import FieldError
from django.db import connection

from tasks import services
from tasks.audit import Channel
from tasks.models import CompressedTextField, TaskOutput
from tasks.records import serialize_queryset
from tasks.selectors import output_tail, task_outputs
from tests.api_support import client_for

pytestmark = pytest.mark.django_db

# An agent's log, as long outputs are: repetitive lines, non-ASCII text among them.
LOG = "".join(
    f"2026-12-02T10:{i:02d}:00Z INFO step {i}: fetched page {i * 7} of the report, tokens used {i * 131}; résumé ok\n"
    for i in range(40)
)
# 300 random ASCII symbols: over the size, but zlib keeps more than 7/8 of them.
RANDOM = "".join(random.Random(3).choices(string.ascii_letters + string.digits + string.punctuation, k=300))


def stored(output: TaskOutput) -> tuple[str, int]:
    """(type, bytes) of the output's content as the database holds it."""
    if connection.vendor == "sqlite":
        sql = "SELECT typeof(content), length(CAST(content AS BLOB)) FROM tasks_taskoutput WHERE id = %s"
    else:
        sql = "SELECT pg_typeof(content)::text, octet_length(content) FROM tasks_taskoutput WHERE id = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [output.pk])
        return cursor.fetchone()


def compressed(text: bytes) -> tuple[str, int]:
    """(type, bytes) of a compressed content: the tag and the zlib stream."""
    size = len(CompressedTextField.COMPRESSED_TAG) + len(zlib.compress(text, CompressedTextField.COMPRESS_LEVEL))
    return ("blob" if connection.vendor == "sqlite" else "bytea", size)


def as_text(size: int) -> tuple[str, int]:
    """(type, bytes) of a content of ``size`` bytes of UTF-8 stored as its text."""
    return ("text" if connection.vendor == "sqlite" else "bytea", size)


@pytest.fixture
def task(user):
    return services.submit_task(owner=user, actor=user, channel=Channel.API, title="outputs")


def test_a_long_output_is_stored_as_its_zlib_stream(task):
    output = services.add_output(task.pk, output_type="log", content=LOG)
    size = len(LOG.encode())
    assert size > CompressedTextField.COMPRESS_MIN_BYTES
    assert stored(output) == compressed(LOG.encode())
    assert stored(output)[1] < size / 4, "a log compresses well"


@pytest.mark.parametrize(
    "content",
    ["", "a line", "x" * (CompressedTextField.COMPRESS_MIN_BYTES - 1), "\u00e9" * 127, RANDOM],
    ids=["empty", "short", "one byte under the size", "127 two-byte characters", "random symbols"],
)
def test_an_output_that_would_not_pay_is_stored_as_its_text(task, content):
    if content is RANDOM:  # the premise: long enough, yet its stream is over 7/8 of it
        text = content.encode()
        assert len(text) >= CompressedTextField.COMPRESS_MIN_BYTES
        assert (
            len(zlib.compress(text, CompressedTextField.COMPRESS_LEVEL))
            > len(text) * CompressedTextField.COMPRESS_MAX_RATIO
        )
    output = services.add_output(task.pk, output_type="stdout", content=content)
    assert stored(output) == as_text(len(content.encode()))
    assert TaskOutput.objects.get(pk=output.pk).content == content


def test_at_the_size_an_output_is_compressed_when_it_pays(task):
    content = "y" * CompressedTextField.COMPRESS_MIN_BYTES
    output = services.add_output(task.pk, output_type="stdout", content=content)
    assert stored(output) == compressed(content.encode())
    assert TaskOutput.objects.get(pk=output.pk).content == content


@pytest.mark.parametrize("content", ["\x00", "\x00" + "z" * 300, "a\x00b"], ids=["NUL", "NUL first", "NUL inside"])
def test_a_text_that_starts_with_the_tag_is_always_compressed_and_reads_back(task, content):
    """A worker's output is not checked for NUL as the API's input is: whatever it holds reads back as it was."""
    assert services.claim(task.pk, worker_id="w1") is not None
    output = services.record_output(task.pk, "stdout", content, attempt=1, worker_id="w1")
    expected = compressed(content.encode()) if content.startswith("\x00") else as_text(len(content.encode()))
    assert stored(output) == expected
    assert TaskOutput.objects.get(pk=output.pk).content == content


def test_every_read_of_an_output_gives_its_text_back(task, user):
    short = services.add_output(task.pk, output_type="stdout", content="a line")
    long = services.add_output(task.pk, output_type="log", content=LOG)
    wide = services.add_output(task.pk, output_type="log", content="\u2603 snow \U0001f600 " * 60)
    expected = ["a line", LOG, "\u2603 snow \U0001f600 " * 60]
    assert [o.content for o in task_outputs(task.pk)] == expected
    assert list(TaskOutput.objects.filter(task=task).order_by("id").values_list("content", flat=True)) == expected
    assert [o.content for o in output_tail(task.pk, 2).lines] == expected[1:]
    assert TaskOutput.objects.get(pk=long.pk).content == LOG
    listed = client_for(user).get(f"/api/tasks/outputs/{task.pk}")
    assert listed.status_code == 200
    assert [o["content"] for o in json.loads(listed.content)["results"]] == expected
    records = [record["fields"]["content"] for record in serialize_queryset(TaskOutput.objects.order_by("id"))]
    assert records == expected, "backups and exports hold the text"
    present = TaskOutput.objects.filter(content__isnull=False).values_list("pk", flat=True)
    assert set(present) == {short.pk, long.pk, wide.pk}


@pytest.mark.parametrize("lookup", ["exact", "icontains", "startswith", "in", "lower__exact"])
def test_a_filter_on_the_content_is_refused_on_both_engines(task, lookup):
    services.add_output(task.pk, output_type="log", content=LOG)
    value = ["x"] if lookup == "in" else "2026"
    with pytest.raises(FieldError):
        list(TaskOutput.objects.filter(**{f"content__{lookup}": value}))


def test_a_credential_in_a_long_output_is_masked_before_it_is_compressed(task):
    secret = "sk-ant-api03-" + "Q" * 40
    output = services.add_output(task.pk, output_type="log", content=LOG + f"ANTHROPIC_API_KEY={secret}\n")
    content = TaskOutput.objects.get(pk=output.pk).content
    assert secret not in content and content.startswith(LOG)
    with connection.cursor() as cursor:
        cursor.execute("SELECT content FROM tasks_taskoutput WHERE id = %s", [output.pk])
        raw = bytes(cursor.fetchone()[0])
    assert raw.startswith(CompressedTextField.COMPRESSED_TAG)
    assert zlib.decompress(raw[1:]).decode() == content, "what is stored is the masked text"


def test_migration_0028_compresses_stored_outputs_and_back(task):
    migration = importlib.import_module("tasks.migrations.0028_output_content_compressed")
    long = services.add_output(task.pk, output_type="log", content=LOG)
    short = services.add_output(task.pk, output_type="stdout", content="a line")
    if connection.vendor == "postgresql":  # the test's transaction holds the outputs' deferred key checks
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    migration.decompress(apps, connection.schema_editor())
    assert stored(long) == ("text", len(LOG.encode()))
    assert TaskOutput.objects.get(pk=long.pk).content == LOG
    assert stored(short) == ("text", len("a line"))
    migration.compress(apps, connection.schema_editor())
    assert stored(long) == compressed(LOG.encode())
    assert stored(short) == as_text(len("a line"))
    assert [o.content for o in task_outputs(task.pk)] == [LOG, "a line"]
