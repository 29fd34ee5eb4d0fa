"""Token authentication whose token-to-user lookup is kept in Redis for a short while.

DRF's TokenAuthentication compiles and runs an ORM query joining the token to
its user on every request: the largest part of a status read. Here the user's
identity and flags (never its password hash) are cached in Redis under a hash
of the token for API_TOKEN_CACHE_SECONDS. Entries are dropped after commit when
a token is deleted or its user saved or deleted (persistence/signals.py), so a
revoked token or a deactivated user is refused at once; a change that bypasses
signals (a queryset ``update()``) takes effect within the cache's lifetime.
Permissions are never cached: ``has_perm`` still reads SQL. Redis down, a miss
or a malformed entry all fall back to DRF's own SQL lookup.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Field
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)


def _cache_key(token_key: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:authtoken:{hashlib.sha256(token_key.encode()).hexdigest()}"


def _cached_fields() -> list[Field[Any, Any]]:
    """The user's columns the cache carries: all but the password hash (left deferred on the instance)."""
    return [f for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


def forget_tokens(token_keys: Iterable[str]) -> None:
    """Drop the cached identity of these tokens (a failure is logged: the entries expire on their own)."""
    keys = [_cache_key(key) for key in token_keys]
    if not keys:
        return
    try:
        get_redis_connection("default").delete(*keys)
    except RedisError as exc:
        logger.warning("could not drop %d cached API tokens; they expire within %ss: %s", len(keys), ttl(), exc)


def ttl() -> int:
    return settings.API_TOKEN_CACHE_SECONDS


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, answered from Redis when the token was seen recently."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        if ttl() <= 0:
            return super().authenticate_credentials(key)
        cache_key = _cache_key(key)
        try:
            raw = get_redis_connection("default").get(cache_key)
        except RedisError:
            return super().authenticate_credentials(key)
        if raw is not None:
            cached = self._from_cache(key, raw)
            if cached is not None:
                return cached
        user, token = super().authenticate_credentials(key)
        entry = {
            "user": [getattr(user, f.attname) for f in _cached_fields()],
            "created": token.created,
        }
        try:
            get_redis_connection("default").set(cache_key, json.dumps(entry, default=str), ex=ttl())
        except RedisError:
            pass
        return user, token

    @staticmethod
    def _from_cache(key: str, raw: bytes) -> tuple[Any, Token] | None:
        """Model instances as loaded from the database (password deferred), or None if the entry is unusable."""
        user_model = get_user_model()
        fields = _cached_fields()
        try:
            entry = json.loads(raw)
            values = [field.to_python(value) for field, value in zip(fields, entry["user"], strict=True)]
            created = Token._meta.get_field("created").to_python(entry["created"])
        except (ValueError, KeyError, TypeError, ValidationError):
            return None
        user = user_model.from_db(DEFAULT_DB_ALIAS, [f.attname for f in fields], values)
        token = Token.from_db(DEFAULT_DB_ALIAS, ["key", "user_id", "created"], [key, user.pk, created])
        token.user = user
        return user, token
