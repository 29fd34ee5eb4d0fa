"""Secrets are never stored or logged: one redaction, applied at every door before anything is written.

The unit tests pin the function (every credential shape masked, ordinary text kept,
idempotent); the others drive each door in-process: the API (submit, edits,
reasons of cancel/delete/restore/recover in the body, query strings refused),
services of every channel, the history, outputs and metrics, Celery results,
the admin's log, restored backup rows and archives, and the logging filter.
``tests/crux/test_no_secret_anywhere.py`` runs them all with real processes.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish
from django.core.management import call_command
from django.utils import timezone
from django_celery_results.models import TaskResult

from tasks import services
from tasks.audit import Channel
from tasks.models import IdempotencyKey, Task, TaskHistory, TaskOutput
from tasks.records import encode, serialize
from tasks.redaction import REDACTED, RedactingFilter, is_secret_key, redact, redact_fields, redact_text
from tests.api_support import client_for, grant
from tests.credentials import ORDINARY, SHAPES, leaks, redis_dump

pytest_plugins = ["tests.api_support"]

ALL_SHAPES = "\n".join(text for _, text, _ in SHAPES)


# --- The function.


@pytest.mark.parametrize(("name", "text", "secret"), SHAPES, ids=[s[0] for s in SHAPES])
def test_every_credential_shape_is_masked_and_masking_again_changes_nothing(name: str, text: str, secret: str) -> None:
    masked = redact_text(text)
    assert secret not in masked and REDACTED in masked
    assert redact_text(masked) == masked


def test_all_shapes_in_one_text_are_masked_and_the_prose_around_them_kept() -> None:
    masked = redact_text(f"before\n{ALL_SHAPES}\nafter")
    assert leaks(masked) == []
    assert masked.startswith("before\n") and masked.endswith("\nafter")


def test_shapes_inside_a_json_encoded_text_are_masked() -> None:
    """Escaped newlines put a letter before each token (``\\nghp_...``): it is still found."""
    for text in (json.dumps({"log": ALL_SHAPES}), json.dumps(json.dumps({"log": ALL_SHAPES}))):
        masked = redact_text(text)
        assert leaks(masked) == [], leaks(masked)
        assert redact_text(masked) == masked


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_uuids_and_digests_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_a_private_key_cut_off_before_its_end_line_is_masked_to_the_end() -> None:
    masked = redact_text("key -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBn")
    assert masked == f"key {REDACTED}"


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "API-KEY",
        "x-api-key",
        "openai_api_key",
        "token",
        "access_token",
        "refresh-token",
        "authToken",
        "password",
        "db_password",
        "passwd",
        "secret",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "Authorization",
        "auth",
        "private_key",
        "privateKey",
        "private_key_id",
        "credentials",
        "db_creds",
        "cookie",
        "Set-Cookie",
        "session_key",
        "passphrase",
        "AccountKey",
    ],
)
def test_credential_keys_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "prompt_tokens", "total_tokens", "tokenizer", "author", "keyboard", "monkey", "title", "secretary"],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_walks_nested_data_and_keeps_the_rest() -> None:
    data = {
        "prompt": "hello",
        "max_tokens": 512,
        "api_key": "sk-live-4f9a8b7c6d5e4f3a2b1c",
        "pin_password": 123456,
        "tools": [{"name": "db", "config": {"password": "db-pass-value", "host": "db.local"}}],
        "headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Accept": "json"},
        "credentials": {"user": "bob", "pass": "x"},
        "key": "Zx8Qw2Er5Ty7Ui9Op1As3Df",
        "idempotency": {"key": "retry-42", "request_id": "3f2b7c1e-9a4d-4c7e-8b1a-2d3e4f5a6b7c"},
        "use_auth": True,
        "empty_token": "",
        "token": None,
        "ghp_R2d2C3po4Luke5Leia6Han7Solo8Yoda9Ab": 1,
    }
    assert redact(data) == {
        "prompt": "hello",
        "max_tokens": 512,
        "api_key": REDACTED,
        "pin_password": REDACTED,
        "tools": [{"name": "db", "config": {"password": REDACTED, "host": "db.local"}}],
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "credentials": REDACTED,
        "key": REDACTED,
        "idempotency": {"key": "retry-42", "request_id": "3f2b7c1e-9a4d-4c7e-8b1a-2d3e4f5a6b7c"},
        "use_auth": True,
        "empty_token": "",
        "token": None,
        REDACTED: 1,
    }
    assert data["api_key"].startswith("sk-")  # the input is not modified
    assert redact(redact(data)) == redact(data)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("curl -H 'Authorization: Bearer abcdef123456789' x", "curl -H 'Authorization: Bearer [REDACTED]' x"),
        ("use key sk-live-4f9a8b7c6d5e4f3a2b1c now", "use key [REDACTED] now"),
        ("login with password=hunter2-password-value please", "login with password=[REDACTED] please"),
        ('{"api_key": "s3cr3t client value", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
        ('{\\"password\\": \\"s3cr3t\\", \\"n\\": 1}', '{\\"password\\": \\"[REDACTED]\\", \\"n\\": 1}'),
        ("token: 'db-pass-value'", "token: '[REDACTED]'"),
        ("export MY_SERVICE_TOKEN=db-pass-value", "export MY_SERVICE_TOKEN=[REDACTED]"),
        ("Server=db;User Id=sa;Password=Xy12!ab;Encrypt=true", "Server=db;User Id=sa;Password=[REDACTED];Encrypt=true"),
    ],
)
def test_redact_text_keeps_the_shape_of_the_text(text: str, kept: str) -> None:
    assert redact_text(text) == kept


def test_the_logging_filter_masks_message_args_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redaction.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("sent %s with %r", SHAPES[7][1], {"password": "Hunter2-Correct-Horse"})
        try:
            raise RuntimeError(SHAPES[0][1])
        except RuntimeError:
            logger.exception("failed with %s", SHAPES[17][1])
        logger.warning("bad format %s %s", "only one")  # a broken call still logs, redacted
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert leaks(text) == [] and "Hunter2-Correct-Horse" not in text
    assert text.count(REDACTED) >= 4 and "Traceback" in text and "bad format" in text


def test_the_configured_handlers_of_every_process_redact(settings: Any) -> None:
    """Django's LOGGING (web, commands, and workers through crux.celery) and gunicorn's logger carry the filter."""
    from gunicorn.glogging import Logger

    from crux.gunicorn_conf import RedactingLogger, access_log_format

    assert "redact" in settings.LOGGING["handlers"]["console"]["filters"]
    assert settings.LOGGING["loggers"]["django"]["handlers"] == []  # Django's records reach that handler
    assert any(isinstance(f, RedactingFilter) for h in logging.getLogger().handlers for f in h.filters)
    assert "%(r)s" not in access_log_format and "%(U)s" in access_log_format  # no query string
    assert issubclass(RedactingLogger, Logger)


# --- Doors, in-process.


@pytest.mark.django_db
def test_submitted_secrets_reach_neither_sql_redis_celery_nor_logs(
    api: Any, settings: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    messages: list[str] = []

    def capture(body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        messages.append(repr(body) + repr(headers))

    before_task_publish.connect(capture, weak=False)
    caplog.set_level(logging.DEBUG)
    body = {
        "title": f"deploy {SHAPES[7][1]}",
        "description": ALL_SHAPES,
        "repository_url": "https://alice:ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r.git",
        "payload": {"openai_api_key": "sk-live-4f9a8b7c6d5e4f3a2b1c", "notes": ALL_SHAPES, "n": 3},
        "metadata": {"Authorization": "Bearer q8Zr5Tp2Wn7Kd4Lm", "env": {"DB_PASSWORD": "x"}, "team": "core"},
        "acceptance_criteria": {"login": {"password": "hunter2"}, "doc": SHAPES[1][1]},
    }
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/tasks/", body, format="json")
    finally:
        before_task_publish.disconnect(capture)
    assert response.status_code == 201, response.data
    task = Task.objects.get(pk=response.data["id"])
    assert messages, "the task was published to Celery"

    assert task.request_payload["openai_api_key"] == REDACTED and task.request_payload["n"] == 3
    assert task.metadata == {"Authorization": REDACTED, "env": {"DB_PASSWORD": REDACTED}, "team": "core"}
    assert task.repository_url == "https://alice:[REDACTED]@github.com/o/r.git"
    assert task.title == f"deploy push with {REDACTED}"
    conn = redis.Redis.from_url(settings.REDIS_URL)
    stored = [
        repr(Task.objects.filter(pk=task.pk).values().get()),
        repr(list(TaskHistory.objects.filter(task=task).values())),
        repr(response.data),
        *redis_dump(conn, f"{settings.REDIS_KEY_PREFIX}:*"),
        *messages,
        caplog.text,
    ]
    assert leaks("\n".join(stored)) == []
    assert "hunter2" not in "\n".join(stored) and "sk-live-4f9a" not in "\n".join(stored)


@pytest.mark.django_db
def test_an_idempotency_key_shaped_like_a_credential_is_stored_masked_and_still_replays(api: Any) -> None:
    key = "ghp_R2d2C3po4Luke5Leia6Han7Solo8Yoda9Ab"
    first = api.post("/api/tasks/", {"title": "t"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = api.post("/api/tasks/", {"title": "t"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert (first.status_code, again.status_code) == (201, 200) and first.data["id"] == again.data["id"]
    other = api.post("/api/tasks/", {"title": "u"}, format="json", HTTP_IDEMPOTENCY_KEY="sk-" + "Q" * 30)
    assert other.status_code == 409  # masked, it is the same key as the first: refused, never a 500
    assert leaks(repr(list(IdempotencyKey.objects.values()))) == []


@pytest.mark.django_db
def test_edits_and_reasons_of_every_channel_are_redacted_before_the_history_row_is_chained(user: Any) -> None:
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="t")
    services.update_task(
        task.pk,
        actor=user,
        channel=Channel.ADMIN,
        reason=f"rotated {SHAPES[12][1]}",
        description=ALL_SHAPES,
        metadata={"token": "Kx7Lp2Vn9Qr4Ts1W", "doc": SHAPES[0][1]},
    )
    services.transition(task.pk, "queued", actor="ops:" + SHAPES[17][1], channel=Channel.COMMAND, reason=ALL_SHAPES)
    services.cancel(task.pk, actor=user, channel=Channel.API, reason=SHAPES[5][1])
    services.soft_delete(task.pk, user=user, channel=Channel.API, reason=SHAPES[25][1])
    services.restore(task.pk, user=user, channel=Channel.ADMIN, reason=SHAPES[30][1])
    rows = list(TaskHistory.objects.filter(task=task).order_by("seq").values())
    assert len(rows) == 6
    assert leaks(repr(rows) + repr(Task.objects.filter(pk=task.pk).values().get())) == []
    assert rows[1]["details"]["changes"]["description"][1].count(REDACTED) >= len(SHAPES) - 5
    assert rows[2]["actor"] == f"ops:OPENAI {REDACTED}"
    call_command("verify_audit", "--no-progress", stdout=io.StringIO())  # the chain verifies: redacted before hashing


@pytest.mark.django_db
def test_worker_writes_are_redacted(user: Any) -> None:
    task = services.create_task(owner=user, actor=user, channel=Channel.API, title="t")
    services.transition(task.pk, "queued", actor="system:test", channel=Channel.SYSTEM)
    claimed = services.claim(task.pk, worker_id="w1")
    assert claimed is not None
    attempt = dict(attempt=claimed.attempt_count, worker_id="w1")
    for _, text, _ in SHAPES:
        services.record_output(task.pk, "log", f"out {text}", file_path=f"/tmp/{text[:100]}", **attempt)
        services.report_progress(task.pk, progress=0.5, phase=text, **attempt)
        assert leaks(Task.objects.get(pk=task.pk).current_phase) == []
    services.record_metrics(task.pk, stop_reason="stop sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH", **attempt)
    services.finish_attempt(task.pk, error=f"RuntimeError: {ALL_SHAPES}", **attempt)
    stored = [
        repr(list(TaskOutput.objects.filter(task=task).values())),
        repr(Task.objects.filter(pk=task.pk).values().get()),
        repr(list(TaskHistory.objects.filter(task=task).values())),
    ]
    assert leaks("\n".join(stored)) == []
    assert TaskOutput.objects.filter(task=task).count() == len(SHAPES)
    assert REDACTED in TaskHistory.objects.filter(task=task).latest("seq").error_message
    assert Task.objects.get(pk=task.pk).stop_reason == f"stop {REDACTED}"


@pytest.mark.django_db
def test_celery_results_and_the_admin_log_are_redacted(superuser: Any) -> None:
    from django.contrib.admin.models import CHANGE, LogEntry

    TaskResult.objects.store_result(
        "application/json",
        "utf-8",
        str(uuid.uuid4()),
        json.dumps({"leaked": ALL_SHAPES}),
        "FAILURE",
        traceback=f"Traceback (most recent call last):\nRuntimeError: {ALL_SHAPES}",
        meta=json.dumps({"children": [], "note": SHAPES[3][1]}),
        task_name="crux.execute_task",
        task_args=repr((SHAPES[16][1],)),
        task_kwargs=repr({"token": SHAPES[7][2]}),
    )
    LogEntry.objects.log_actions(
        superuser.pk, [superuser], CHANGE, change_message=f"Cancelled through the admin: {ALL_SHAPES}"
    )
    stored = repr(list(TaskResult.objects.values())) + repr(list(LogEntry.objects.values()))
    assert leaks(stored) == [] and stored.count(REDACTED) >= len(SHAPES)


def _task_row(**fields: Any) -> dict[str, Any]:
    return serialize([Task(id=uuid.uuid4(), title="restored", updated_at=timezone.now(), **fields)])[0]


@pytest.mark.django_db
def test_a_restored_backup_is_redacted_row_by_row(tmp_path: Path, settings: Any) -> None:
    """A backup written before redaction existed (or edited by hand) cannot bring a secret back."""
    from persistence.backup import FORMAT

    row = _task_row(description=ALL_SHAPES, metadata={"api_key": "Zr8Tq3Wm6Yp1"}, last_error=SHAPES[0][1])
    output = serialize([TaskOutput(id=1, task_id=row["pk"], output_type="log", content=ALL_SHAPES)])[0]
    path = tmp_path / "crux-backup-old.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(encode({"format": FORMAT, "created_at": "2026-01-01T00:00:00+00:00", "vendor": "x"}) + "\n")
        out.write(encode(row) + "\n" + encode(output) + "\n")
    call_command("restore", str(path), stdout=io.StringIO())
    stored = repr(Task.objects.filter(pk=row["pk"]).values().get()) + repr(list(TaskOutput.objects.values()))
    assert leaks(stored) == [] and "Zr8Tq3Wm6Yp1" not in stored
    assert Task.objects.get(pk=row["pk"]).title == "restored"


@pytest.mark.django_db
def test_an_archive_brought_back_is_redacted(user: Any) -> None:
    row = _task_row(description=ALL_SHAPES, state="completed")
    output = serialize([TaskOutput(id=7, task_id=row["pk"], output_type="log", content=ALL_SHAPES)])[0]
    entry = {"task": row, "history": [], "outputs": [output]}
    task = services.reinstate(entry, history_head=(0, ""), actor=user, channel=Channel.COMMAND, reason="test")
    stored = repr(Task.objects.filter(pk=task.pk).values().get()) + repr(list(TaskOutput.objects.values()))
    assert leaks(stored) == [] and REDACTED in stored


def test_redact_fields_cuts_a_grown_value_to_its_column() -> None:
    output = TaskOutput(output_type="log", mime_type="x" * 84 + " Bearer abcdefgh")  # 100: the column's length
    redact_fields(output)
    assert output.mime_type == "x" * 84 + " Bearer [REDACTED"[:16] and len(output.mime_type) == 100


# --- Credentials never travel in a URL.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("confirm=true&reason=not+needed", "reason"),
        ("confirm=true&token=abc", "token"),
        ("confirm=true&api_key=abc", "api_key"),
        ("confirm=true&note=password%3Dhunter22", "note"),
        ("confirm=true&x=ghp_R2d2C3po4Luke5Leia6Han7Solo8Yoda9Ab", "x"),
    ],
)
def test_a_reason_or_credential_in_the_query_string_is_refused_naming_it(
    query: str, named: str, api: Any, task_in: Any
) -> None:
    task = task_in("running")
    response = api.post(f"/api/tasks/{task.pk}/cancel?{query}", {"reason": "ok"}, format="json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert list(response.json()) == [named] and "JSON request body" in response.json()[named][0]
    assert Task.objects.get(pk=task.pk).state == "running"


@pytest.mark.django_db
def test_a_credential_in_a_list_filter_is_refused_before_any_read(api: Any) -> None:
    response = api.get("/api/tasks/persistent", {"search": "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"})
    assert response.status_code == 400 and list(response.json()) == ["search"]
    assert api.get("/api/tasks/persistent", {"search": "login bug"}).status_code == 200


@pytest.mark.django_db
def test_reasons_travel_in_the_body_of_cancel_delete_restore_recover_and_legacy_cancel(user: Any, task_in: Any) -> None:
    client = client_for(grant(user, "soft_delete_task", "restore_task", "recover_task"))
    running, failed, job = task_in("running"), task_in("failed"), task_in("queued")
    secret_reason = f"user asked; {SHAPES[24][1]}"
    for method, path in [
        ("post", f"/api/tasks/{running.pk}/cancel?confirm=true"),
        ("delete", f"/api/tasks/{running.pk}?confirm=true"),
        ("post", f"/api/tasks/{running.pk}/restore"),
        ("post", f"/api/tasks/{failed.pk}/recover"),
        ("delete", f"/api/v1/jobs/{job.pk}?confirm=true"),
    ]:
        response = getattr(client, method)(path, {"reason": secret_reason}, format="json")
        assert response.status_code == 200, (path, response.data)
    reasons = list(TaskHistory.objects.filter(channel="api").values_list("reason", flat=True))
    assert reasons.count(f"user asked; Authorization: Basic {REDACTED}") == 5


def test_the_schema_takes_reasons_from_bodies_never_from_query_strings() -> None:
    from drf_spectacular.generators import SchemaGenerator

    spec = SchemaGenerator().get_schema(request=None, public=True)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert not names & {"reason", "token", "password", "api_key"}, (method, path)
    for path, method in [
        ("/api/tasks/{task_id}/cancel", "post"),
        ("/api/tasks/{task_id}", "delete"),
        ("/api/v1/jobs/{job_id}", "delete"),
    ]:
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        component = spec["components"]["schemas"][body.rsplit("/", 1)[1]]
        assert "reason" in component["properties"], (method, path)
