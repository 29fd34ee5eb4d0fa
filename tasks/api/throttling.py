"""Per-user rate limits for submissions and reads (rates in settings: API_THROTTLE_SUBMIT, API_THROTTLE_READ).

Counters live in the ``throttle`` cache (Redis, under REDIS_KEY_PREFIX) and fail
open when Redis is unreachable: a lost mirror never takes the API down.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


def plain_key(key: str, key_prefix: str, version: int) -> str:
    """Cache key function of the throttle cache: the key as built below, already prefixed."""
    return key


class _ScopedUserThrottle(UserRateThrottle):
    methods: frozenset[str] = frozenset()

    @property
    def cache(self) -> Any:  # type: ignore[override]
        return caches["throttle"]

    def get_rate(self) -> str | None:
        # Read at request time, so a changed setting applies without a restart of the class.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return f"{settings.REDIS_KEY_PREFIX}:throttle:{self.scope}:{ident}"

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method not in self.methods:
            return True
        return super().allow_request(request, view)


class ReadThrottle(_ScopedUserThrottle):
    """Every read (GET/HEAD) of the API counts against API_THROTTLE_READ."""

    scope = "read"
    methods = frozenset({"GET", "HEAD"})


class SubmitThrottle(_ScopedUserThrottle):
    """Each submission (POST to a submit endpoint) counts against API_THROTTLE_SUBMIT."""

    scope = "submit"
    methods = frozenset({"POST"})
