"""Credentials never reach storage: redact them from submitted data before anything is written.

No API key or secret is stored in task data. A submission's
payload, metadata and acceptance criteria are walked recursively: the value of
every key that names a credential (``api_key``, ``token``, ``password``,
``secret``, ``authorization``...) is replaced, and strings that carry one
(``Bearer ...``, ``https://user:pass@host``, well-known key prefixes,
``password=...``) are masked. Redaction runs before the task is validated and
saved, so no secret reaches SQL, the history rows, the Redis mirror, a Celery
message or a log line. Counts such as ``max_tokens`` are not credentials and
are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

REDACTED = "[REDACTED]"

# Single words that name a credential when they appear as a word of a key.
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "cookie",
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
        ("private", "key"),
        ("secret", "key"),
        ("signing", "key"),
        ("session", "key"),
        ("client", "secret"),
        ("set", "cookie"),
    }
)
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Strings that carry a credential whatever the key: (pattern, replacement).
_VALUE_PATTERNS = (
    # Authorization header values.
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1 {REDACTED}"),
    # Passwords in URLs: scheme://user:password@host
    (re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@"), rf"\1:{REDACTED}@"),
    # Well-known key formats: OpenAI/Anthropic, GitHub, Slack, AWS access key ids, Google API keys.
    (
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
            r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35})"
        ),
        REDACTED,
    ),
    # key=value / key: value assignments inside free text.
    (
        re.compile(
            r"(?i)(?<![a-z0-9])(api[_-]?key|access[_-]?token|auth[_-]?token|token|password|passwd|secret|client[_-]?secret)"
            r"([\"']?\s*[:=]\s*)([\"']?)(?!\[REDACTED\])[^\s\"',;&}]+"
        ),
        rf"\1\2\3{REDACTED}",
    ),
)


def is_secret_key(key: Any) -> bool:
    """True if a mapping key names a credential (``apiKey``, ``X-Auth-Token``, ``db_password``...)."""
    if not isinstance(key, str):
        return False
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in pairwise(words))


def redact_text(text: str) -> str:
    """Mask credentials carried inside a string."""
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like data) with every credential replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_submission(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a task submission with credentials redacted from every value."""
    return {name: redact(value) for name, value in fields.items()}
