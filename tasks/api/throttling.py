"""Per-user rate limits for submissions and reads (rates in settings: API_THROTTLE_SUBMIT, API_THROTTLE_READ).

Counters live in the Redis of the ``throttle`` cache alias, under REDIS_KEY_PREFIX,
and fail open when Redis is unreachable: a lost mirror never takes the API down.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import NoScriptError, RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

# Count a request in its window and start the window's expiry with its first request: one round trip.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_COUNT_SHA = hashlib.sha1(_COUNT.encode()).hexdigest()


def _count(key: str, ttl: int) -> int:
    """Increment the window counter ``key`` (expiring after ``ttl`` seconds); loads the script once per Redis."""
    client = get_redis_connection("throttle")
    try:
        return client.evalsha(_COUNT_SHA, 1, key, ttl)
    except NoScriptError:
        return client.eval(_COUNT, 1, key, ttl)


class _ScopedUserThrottle(UserRateThrottle):
    """A fixed-window counter per user and scope: one Redis INCR per request.

    DRF's own throttle keeps a list of every request time in the window and
    rewrites it on each request, which costs O(rate) per request (a user allowed
    10,000 requests a minute pays for a 10,000-entry list each time). Here the
    window is the current ``duration`` slot; the key expires with it. Counting is one
    EVALSHA: cheaper for the client than a pipeline of INCR and EXPIRE.
    """

    methods: frozenset[str] = frozenset()
    scope: str  # named by each throttle below
    # Set by SimpleRateThrottle.__init__ from the rate; read only when there is one.
    num_requests: int
    duration: int

    def get_rate(self) -> str | None:
        # Read at request time, so a changed setting applies without a restart of the class.
        # drf-stubs type the rates as numbers; they are strings such as "60/minute".
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)  # type: ignore[return-value]

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return f"{settings.REDIS_KEY_PREFIX}:throttle:{self.scope}:{ident}"

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method not in self.methods or self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        try:
            count = _count(f"{key}:{window}", int(self.duration) + 1)
        except RedisError:
            return True  # fail open: Redis never takes the API down
        return count <= self.num_requests

    def wait(self) -> float:
        return max(0.0, self.window_end - self.now)


class ReadThrottle(_ScopedUserThrottle):
    """Every read (GET/HEAD) of the API counts against API_THROTTLE_READ."""

    scope = "read"
    methods = frozenset({"GET", "HEAD"})


class SubmitThrottle(_ScopedUserThrottle):
    """Each submission (POST to a submit endpoint) counts against API_THROTTLE_SUBMIT."""

    scope = "submit"
    methods = frozenset({"POST"})
