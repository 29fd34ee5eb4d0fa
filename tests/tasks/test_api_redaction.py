"""Secrets are never stored: credentials in submissions are redacted before SQL, Redis, Celery or a log."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish

from tasks.models import Task, TaskHistory, TaskOutput
from tasks.redaction import REDACTED, is_secret_key, redact, redact_text

pytest_plugins = ["tests.api_support"]

SECRETS = [
    "sk-live-4f9a8b7c6d5e4f3a2b1c",
    "hunter2-password-value",
    "ghp_abcdefghijklmnopqrstuvwxyz0123",
    "AKIAABCDEFGHIJKLMNOP",
    "eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "s3cr3t-client-value",
    "db-pass-value",
]


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
        "credentials",
        "cookie",
        "Set-Cookie",
        "session_key",
        "passphrase",
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
        "tools": [{"name": "db", "config": {"password": "db-pass-value", "host": "db.local"}}],
        "headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Accept": "json"},
        "empty_token": "",
        "token": None,
    }
    assert redact(data) == {
        "prompt": "hello",
        "max_tokens": 512,
        "api_key": REDACTED,
        "tools": [{"name": "db", "config": {"password": REDACTED, "host": "db.local"}}],
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "empty_token": "",
        "token": None,
    }
    assert data["api_key"].startswith("sk-")  # the input is not modified


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("curl -H 'Authorization: Bearer abcdef123456789' x", "curl -H 'Authorization: Bearer"),
        ("clone https://alice:ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r", "clone https://alice:"),
        ("use key sk-live-4f9a8b7c6d5e4f3a2b1c now", "use key "),
        ("aws AKIAABCDEFGHIJKLMNOP", "aws "),
        ("login with password=hunter2-password-value please", "login with password="),
        ('{"api_key": "s3cr3t-client-value", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
        ("token: 'db-pass-value'", "token: '[REDACTED]'"),
        ("export MY_SERVICE_TOKEN=db-pass-value", "export MY_SERVICE_TOKEN=[REDACTED]"),
    ],
)
def test_redact_text_masks_credentials_inside_strings(text: str, kept: str) -> None:
    masked = redact_text(text)
    assert masked.startswith(kept)
    assert REDACTED in masked
    assert not any(secret in masked for secret in SECRETS)


def test_plain_text_is_untouched() -> None:
    text = "Refactor the token bucket (max_tokens=512); see https://example.com/docs?page=2 and the password policy."
    assert redact_text(text) == text


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
        "title": "deploy",
        "description": "use token sk-live-4f9a8b7c6d5e4f3a2b1c for the API",
        "repository_url": "https://alice:ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r.git",
        "payload": {"openai_api_key": SECRETS[0], "steps": [{"env": {"DB_PASSWORD": SECRETS[6]}}], "n": 3},
        "metadata": {"Authorization": f"Bearer {SECRETS[4]}", "client_secret": SECRETS[5], "team": "core"},
        "acceptance_criteria": {"login": {"password": SECRETS[1]}},
    }
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/tasks/", body, format="json")
    finally:
        before_task_publish.disconnect(capture)
    assert response.status_code == 201, response.data
    task = Task.objects.get(pk=response.data["id"])
    assert messages, "the task was published to Celery"

    # What is kept is kept; what is secret is gone from every store.
    assert task.request_payload == {"openai_api_key": REDACTED, "steps": [{"env": {"DB_PASSWORD": REDACTED}}], "n": 3}
    assert task.metadata == {"Authorization": REDACTED, "client_secret": REDACTED, "team": "core"}
    assert task.repository_url == "https://alice:[REDACTED]@github.com/o/r.git"
    conn = redis.Redis.from_url(settings.REDIS_URL)
    stored = [
        repr(Task.objects.filter(pk=task.pk).values().get()),
        repr(list(TaskHistory.objects.filter(task=task).values())),
        repr(response.data),
        *(repr(conn.get(k)) for k in conn.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:*")),
        *messages,
        caplog.text,
    ]
    for secret in SECRETS:
        assert not any(secret in text for text in stored), secret


@pytest.mark.django_db
def test_legacy_solve_and_outputs_are_redacted(api: Any, task_in: Any) -> None:
    response = api.post("/api/v1/solve", {"request": {"api_key": SECRETS[0], "q": "x"}}, format="json")
    assert Task.objects.get(pk=response.data["job_id"]).request_payload == {"api_key": REDACTED, "q": "x"}

    task = task_in("running")
    content = f"export GITHUB_TOKEN={SECRETS[2]}\nok"
    api.post(f"/api/tasks/outputs/{task.pk}", {"output_type": "log", "content": content}, format="json")
    assert TaskOutput.objects.get(task=task).content == f"export GITHUB_TOKEN={REDACTED}\nok"


@pytest.mark.django_db
def test_an_idempotent_retry_carrying_the_same_secret_replays(api: Any) -> None:
    body = {"title": "t", "payload": {"token": SECRETS[0]}}
    first = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="secret-retry")
    again = api.post("/api/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="secret-retry")
    assert (first.status_code, again.status_code) == (201, 200)
    assert Task.objects.count() == 1


def test_every_channel_redacts_not_only_the_api(user):
    from tasks import services
    from tasks.audit import Channel

    created = services.create_task(
        owner=user, actor=user, channel=Channel.ADMIN, title="t", metadata={"api_key": "sk-live-abcdef0123456789"}
    )
    submitted = services.submit_task(
        owner=user, actor=user, channel=Channel.COMMAND, title="t", request_payload={"password": "hunter22"}
    )
    assert created.metadata == {"api_key": "[REDACTED]"}
    assert submitted.request_payload == {"password": "[REDACTED]"}
    assert "sk-live" not in str(created.history.get().details)
