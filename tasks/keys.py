"""The audit keys: secrets kept outside the database that sign what an attacker with SQL access must not forge.

``AUDIT_KEYS`` (settings) lists "id:secret" items, newest first; a bare secret
(the one line ``make keys`` writes) gets an id derived from it. New signatures
use the newest key and name its id; a signature is checked with the key its id
names, so adding a key never invalidates what older keys signed. Each use has
its own key derived from the audit key (HMAC of a purpose label), so a key
handed to the database for one purpose (purge grants) reveals nothing of the others.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_ID_MAX_LENGTH = 32
# Purposes: each signs one kind of record with its own derived key.
HISTORY = "history-chain"
GRANT = "purge-grant"
LEDGER = "purge-ledger"
CHECKPOINT = "checkpoint"


class UnknownKey(LookupError):
    """A signature names a key id that AUDIT_KEYS does not hold (retired, or forged)."""


@lru_cache(maxsize=8)
def _keys(items: tuple[str, ...]) -> tuple[str, dict[str, bytes]]:
    """(newest key id, {key id: secret}) parsed from AUDIT_KEYS items."""
    parsed: dict[str, bytes] = {}
    for item in items:
        key_id, sep, secret = item.strip().partition(":")
        if not sep:
            key_id, secret = "k" + hashlib.sha256(item.strip().encode()).hexdigest()[:12], item.strip()
        if not key_id or not secret or len(key_id) > KEY_ID_MAX_LENGTH or key_id in parsed:
            raise ImproperlyConfigured(
                f"AUDIT_KEYS items are 'id:secret' (id at most {KEY_ID_MAX_LENGTH} characters, each id once)"
            )
        parsed[key_id] = secret.encode()
    if not parsed:
        raise ImproperlyConfigured("no audit key: set AUDIT_KEYS or AUDIT_KEY_FILE (`make keys` writes one)")
    return next(iter(parsed)), parsed


def current_key_id() -> str:
    """The id of the newest key: every new signature uses it."""
    return _keys(tuple(settings.AUDIT_KEYS))[0]


def key_ids() -> list[str]:
    """Every configured key id, newest first."""
    return list(_keys(tuple(settings.AUDIT_KEYS))[1])


@lru_cache(maxsize=64)
def _derived(secret: bytes, purpose: str) -> tuple[bytes, hmac.HMAC]:
    """The derived key, and an HMAC keyed with it to copy per message (keying costs more than the hashing)."""
    key = hmac.digest(secret, f"crux/{purpose}".encode(), "sha256")
    return key, hmac.new(key, digestmod=hashlib.sha256)


def _derive(purpose: str, key_id: str | None) -> tuple[bytes, hmac.HMAC]:
    newest, secrets = _keys(tuple(settings.AUDIT_KEYS))
    secret = secrets.get(newest if key_id is None else key_id)
    if secret is None:
        raise UnknownKey(f"audit key {key_id!r} is not configured in AUDIT_KEYS")
    return _derived(secret, purpose)


def derived_key(purpose: str, key_id: str | None = None) -> bytes:
    """The key of one ``purpose`` derived from audit key ``key_id`` (the newest by default); never the raw key."""
    return _derive(purpose, key_id)[0]


def signer(purpose: str, key_id: str) -> hmac.HMAC:
    """An HMAC-SHA256 under the ``purpose`` key of audit key ``key_id``, to feed piece by piece (a checkpoint
    file); ``hexdigest()`` is the signature."""
    return _derive(purpose, key_id)[1].copy()


def sign(purpose: str, key_id: str, message: str) -> str:
    """Hex HMAC-SHA256 of ``message`` under the ``purpose`` key derived from audit key ``key_id``."""
    mac = signer(purpose, key_id)
    mac.update(message.encode("utf-8"))
    return mac.hexdigest()


def grant_message(task_id: uuid.UUID | str, nonce: str) -> str:
    """What a purge grant's MAC covers: the task (as 32 hex digits, as SQLite stores it) and a one-time nonce."""
    return f"{uuid.UUID(str(task_id)).hex}:{nonce}"


def grant_key(key_id: str | None = None) -> str:
    """The purge-grant key as text: what a purge hands its PostgreSQL session (``SET LOCAL``), never the audit key."""
    return derived_key(GRANT, key_id).hex()


def grant_mac(task_id: uuid.UUID | str, nonce: str) -> str:
    """The MAC that lets the history DELETE trigger admit a purge of ``task_id`` (newest key)."""
    return hmac.digest(grant_key().encode(), grant_message(task_id, nonce).encode(), "sha256").hex()


def grant_key_fingerprints() -> list[str]:
    """sha256 of each configured key's grant key: the only keys the PostgreSQL trigger accepts from a session."""
    return [hashlib.sha256(grant_key(key_id).encode()).hexdigest() for key_id in key_ids()]
