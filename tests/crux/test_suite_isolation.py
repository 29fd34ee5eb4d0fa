"""The suite's Redis keys are its own run's: the settings are read with the run's key prefix (tests.environment),
so nothing the suite does, from the requests made while tests are collected on, counts or caches under the default
prefix that another run or a developer's ``make run`` shares."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches

from tests.conftest import RUN_PREFIX


def test_every_redis_cache_keys_its_entries_under_this_runs_prefix() -> None:
    redis_caches = [alias for alias, cache in settings.CACHES.items() if "redis" in cache["BACKEND"].lower()]
    assert {"default", "throttle"} <= set(redis_caches)
    assert RUN_PREFIX.startswith("crux-test-")
    for alias in redis_caches:
        assert caches[alias].make_key("entry").startswith(f"{RUN_PREFIX}:"), alias
