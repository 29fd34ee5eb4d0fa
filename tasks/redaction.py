"""Credentials never reach storage or a log: the one redaction every written value passes.

No API key or secret is stored in task data (DESIGN.md invariant 10). ``redact``
walks JSON-like data: the value of every key that names a credential
(``api_key``, ``token``, ``password``, ``private_key``...) is replaced, and every
string is passed to ``redact_text``, which masks what carries a credential
whatever its key: private key blocks (PEM, OpenSSH, PGP, also inside a JSON
string with escaped newlines), some forty token formats (cloud, VCS, chat,
payment, AI providers, package registries, JWTs), ``Authorization`` schemes,
passwords in URLs and ``password=``/``token: ...`` assignments in text and query
strings. Redaction is idempotent (a masked value is masked again unchanged), so
applying it at every door never changes a hash computed after the first pass.

Where it runs, once for every channel:

- ``redact_fields`` on every row of the project's models, the admin's log and
  Celery's results as it is saved (a ``pre_save`` receiver connected before the
  history writer's, so a task is masked before its history row is diffed and
  chained; raw loads of backups included); the two writes that send no signal
  call it too (an archive's bulk insert, a progress ``UPDATE``);
- ``tasks.audit.audited`` masks the actor and reason of every history row;
- ``RedactingFilter`` masks every log record of every process (Django's LOGGING,
  Celery's processes through it, gunicorn's logger);
- ``tasks.api.middleware`` refuses a URL that carries a credential or a reason.

Ordinary prose, UUIDs, hex digests and counts such as ``max_tokens`` are kept.
A hand-written pattern table rather than a scanner library (detect-secrets):
those report findings line by line in files, flag only the first line of a key
block and cost milliseconds per string; this masks spans in microseconds.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any

from django.db import models
from django.db.models.signals import pre_save

REDACTED = "[REDACTED]"

# Single words that name a credential when they appear as a word of a key.
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "creds",
        "credential",
        "credentials",
        "jwt",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "token",
    }
)
# Pairs of consecutive words that name a credential (``api_key``, ``X-Api-Key``, ``privateKey``).
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("account", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("signing", "key"),
        ("session", "key"),
        ("client", "secret"),
        ("set", "cookie"),
        ("shared", "access"),
    }
)
# Words that name a credential only when the value looks random (``{"key": "Zx8..."}``, ``sig``).
_RANDOM_WORDS = frozenset({"key", "sig", "signature", "dsn"})
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Private key blocks, to their END line (or to the end of the text when it was cut off).
_KEY_BLOCK = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
# Token formats whose whole match is the credential.
_TOKENS = re.compile(
    "|".join(
        [
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b",  # AWS access key id
            r"\bsk-[A-Za-z0-9_-]{16,}",  # OpenAI sk-, sk-proj-, Anthropic sk-ant-
            r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub
            r"\bgithub_pat_[A-Za-z0-9_]{20,}",
            r"\bgl(?:pat|dt|rt|ptt|soat|cbt|ft|imt|oas)-[A-Za-z0-9_-]{20,}",  # GitLab
            r"\bglsa_[A-Za-z0-9_]{20,}",  # Grafana service account
            r"\bxox[abposre]-[A-Za-z0-9-]{10,}",  # Slack
            r"\bxapp-\d-[A-Za-z0-9-]{10,}",
            r"(?<=hooks\.slack\.com/)[A-Za-z0-9/_-]{10,}",  # Slack webhook path
            r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe
            r"\bwhsec_[A-Za-z0-9]{20,}",
            r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key
            r"\bya29\.[0-9A-Za-z_-]{20,}",  # Google OAuth access token
            r"\bGOCSPX-[A-Za-z0-9_-]{20,}",  # Google OAuth client secret
            r"\b1//0[A-Za-z0-9_-]{30,}",  # Google OAuth refresh token
            r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)?",  # JWT
            r"\bnpm_[A-Za-z0-9]{30,}",  # npm
            r"\bpypi-[A-Za-z0-9_-]{40,}",  # PyPI
            r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid
            r"\bSK[0-9a-fA-F]{32}\b",  # Twilio API key
            r"\bkey-[0-9a-zA-Z]{32}\b",  # Mailgun
            r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}",  # HashiCorp Vault
            r"\bdo[por]_v1_[a-f0-9]{64}\b",  # DigitalOcean
            r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",  # Shopify
            r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{20,}",  # Square
            r"\bdapi[a-f0-9]{32}(?:-\d+)?\b",  # Databricks
            r"\bHRKU-[A-Za-z0-9_-]{20,}",  # Heroku
            r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face
            r"\b\d{8,10}:AA[A-Za-z0-9_-]{30,}",  # Telegram bot
            r"\bATATT3[A-Za-z0-9_=-]{20,}",  # Atlassian
            r"\bntn_[A-Za-z0-9]{30,}",  # Notion
            r"\bPMAK-[A-Za-z0-9-]{20,}",  # Postman
            r"\bNRAK-[A-Z0-9]{20,}",  # New Relic
            r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{20,}",  # Doppler
            r"\blin_api_[A-Za-z0-9]{30,}",  # Linear
            r"\bAGE-SECRET-KEY-1[0-9A-Z]{50,}",  # age
        ]
    )
)
# Every token format has no space, quote or backslash and at least 15 characters: only such runs are searched for
# them. A run starts after an escape of a JSON text (``\\nghp_...``, ``\\u00e9sk-...``), not at its letters.
_RUN = re.compile(r"[^\s\"'<>(){}\[\],;\\]{15,}")
_ESCAPE_LETTERS = re.compile(r"u[0-9a-fA-F]{4}|[nrtbf/]")
# A 40-character base64 run of mixed case and digits standing alone: an AWS secret access key's shape.
_BASE64_40 = re.compile(r"(?<![A-Za-z0-9/+=_-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])")
# Authorization header schemes.
_AUTH_SCHEME = re.compile(
    r"(?:(?<=\\[nrt])|\b)(Bearer|Basic|Token|Digest|ApiKey)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}", re.I
)
# Passwords in URLs: scheme://user:password@host (the user may be empty: redis://:password@host).
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):([^/\s@]+)@")
# ``name = value`` / ``"name": "value"`` / ``name=value&`` where the name ends with a credential word
# (``MY_SERVICE_TOKEN=...`` and ``apitoken=...`` too): what precedes the word is kept.
_ASSIGNMENT = re.compile(
    r"(?i)(password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key(?:[_-]?id)?|account[_-]?key|sharedaccesssignature|credentials?|sig)"
    r"(\\*[\"']?\s*[:=]\s*)(?!(?:Bearer|Basic|Token|Digest|ApiKey)\s)"
    r"(?:(\\+\")(?:(?!\3)[^\n])*\3|(\")(?:[^\"\\\n]|\\.)*\"|(')[^'\n]*'|(?!\[REDACTED\])[^\s\"',;&}<>\\]+)"
)
# A cheap test before the assignment pattern: one of these is in every name it matches.
_ASSIGNMENT_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "sig")


def is_secret_key(key: Any) -> bool:
    """True if a mapping key names a credential (``apiKey``, ``X-Auth-Token``, ``db_password``...)."""
    words = _key_words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in pairwise(words))


def _key_words(key: Any) -> tuple[str, ...]:
    return _words(key) if isinstance(key, str) else ()


@lru_cache(maxsize=4096)
def _words(key: str) -> tuple[str, ...]:
    return tuple(w for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()) if w)


def looks_random(value: str) -> bool:
    """A value shaped like a generated secret: long, no spaces, mixed character classes, high entropy."""
    if len(value) < 16 or any(c.isspace() for c in value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    if classes < 3:  # hex digests, UUIDs and words are not masked
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.5


def _assignment(match: re.Match[str]) -> str:
    quote = match.group(3) or match.group(4) or match.group(5) or ""
    return f"{match.group(1)}{match.group(2)}{quote}{REDACTED}{quote}"


def _redact_run(match: re.Match[str]) -> str:
    run, escape = match.group(), ""
    if match.start() and match.string[match.start() - 1] == "\\":
        letters = _ESCAPE_LETTERS.match(run)
        if letters:
            escape, run = letters.group(), run[letters.end() :]
    run = _TOKENS.sub(REDACTED, run)
    return escape + _BASE64_40.sub(lambda m: REDACTED if looks_random(m.group()) else m.group(), run)


def redact_text(text: str) -> str:
    """Mask every credential carried inside a string; the rest of the text is kept."""
    if not text:
        return text
    if len(text) <= _CACHED_LENGTH:
        return _redact_cached(text)
    return _redact(text)


# A task's texts pass again at each of its saves (claim, outcome...): short ones are remembered.
_CACHED_LENGTH = 2048


@lru_cache(maxsize=4096)
def _redact_cached(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    text = _KEY_BLOCK.sub(REDACTED, text)
    text = _RUN.sub(_redact_run, text)
    text = _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    lowered = text.lower()
    if any(word in lowered for word in _ASSIGNMENT_WORDS):
        text = _ASSIGNMENT.sub(_assignment, text)
    return text


def _redact_item(key: Any, value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if is_secret_key(key):
        return REDACTED
    if isinstance(value, str) and any(w in _RANDOM_WORDS for w in _key_words(key)) and looks_random(value):
        return REDACTED
    return redact(value)


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like data) with every credential replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {(redact_text(k) if isinstance(k, str) else k): _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_submission(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a task submission with credentials redacted from every value."""
    return {name: redact(value) for name, value in fields.items()}


# The apps whose rows carry free text from a client, a worker, an import or a log of staff actions.
REDACTED_APPS = frozenset({"tasks", "persistence", "retention", "crux", "admin", "axes", "django_celery_results"})


def redact_fields(instance: models.Model) -> None:
    """Mask credentials in every text and JSON field of a row, in place, before it is written.

    Fields with choices are left alone; a text that grew (``Bearer [REDACTED]``)
    is cut to the column's length.
    """
    for attname, is_json, max_length in _free_text_fields(type(instance)):
        value = getattr(instance, attname)
        if is_json:
            if value is not None:
                setattr(instance, attname, redact(value))
        elif isinstance(value, str) and value:
            masked = redact_text(value)
            if masked != value:
                setattr(instance, attname, masked[:max_length] if max_length else masked)


@cache
def _free_text_fields(model: type[models.Model]) -> tuple[tuple[str, bool, int | None], ...]:
    """(attname, is JSON, max length) of a model's text and JSON columns that hold free text (no choices)."""
    return tuple(
        (field.attname, isinstance(field, models.JSONField), field.max_length)
        for field in model._meta.concrete_fields
        if not field.choices
        and not field.primary_key
        and isinstance(field, (models.JSONField, models.CharField, models.TextField))
    )


def _before_save(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if sender._meta.app_label in REDACTED_APPS:
        redact_fields(instance)


def connect() -> None:
    """Redact every row of ``REDACTED_APPS`` on save, raw loads of backups included (``TasksConfig.ready``)."""
    pre_save.connect(_before_save, dispatch_uid="tasks.redaction.redact_fields")


class RedactingFilter(logging.Filter):
    """A logging filter (installed on every handler) that masks credentials in messages, args and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
