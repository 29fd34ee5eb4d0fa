"""Token authentication served from Redis: revocation and deactivation still apply at once."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from persistence import mirror
from tasks.api.authentication import _cache_key

pytest_plugins = ["tests.api_support"]


def token_queries(api: Any) -> int:
    """SQL queries of one authenticated read that touch the token table."""
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/tasks/").status_code == 200
    return sum("authtoken_token" in query["sql"] for query in queries.captured_queries)


def test_a_token_is_looked_up_in_sql_once_then_served_from_redis(api: Any, user: Any) -> None:
    assert token_queries(api) == 1
    assert token_queries(api) == 0
    key = Token.objects.get(user=user).key
    cached = mirror.client().get(_cache_key(key))
    assert cached is not None
    assert key.encode() not in cached and user.password.encode() not in cached
    assert not [k for k in mirror.client().scan_iter(match=f"*{key}*")], "the raw token must not name a Redis key"


def test_a_deleted_token_is_refused_at_once(api: Any, user: Any, django_capture_on_commit_callbacks: Any) -> None:
    assert api.get("/api/tasks/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        Token.objects.filter(user=user).delete()
    assert api.get("/api/tasks/").status_code == 401


def test_a_deactivated_user_is_refused_at_once(api: Any, user: Any, django_capture_on_commit_callbacks: Any) -> None:
    assert api.get("/api/tasks/").status_code == 200
    user.is_active = False
    with django_capture_on_commit_callbacks(execute=True):
        user.save()
    assert api.get("/api/tasks/").status_code == 401


def test_a_user_made_staff_sees_everything_at_once(
    api: Any, user: Any, other_user: Any, task_in: Any, django_capture_on_commit_callbacks: Any
) -> None:
    others = task_in("queued", owner=other_user)
    assert api.get(f"/api/tasks/{others.pk}").status_code == 404
    user.is_staff = True
    with django_capture_on_commit_callbacks(execute=True):
        user.save()
    assert api.get(f"/api/tasks/{others.pk}").status_code == 200


def test_a_cached_user_is_saved_without_losing_its_password(api: Any, user: Any) -> None:
    api.get("/api/tasks/")
    response = api.get("/api/tasks/")
    cached_user = response.wsgi_request.user
    cached_user.first_name = "Alice"
    cached_user.save()
    user.refresh_from_db()
    assert user.first_name == "Alice" and user.check_password("pw-alice-123")


def test_a_malformed_cache_entry_falls_back_to_sql(api: Any, user: Any) -> None:
    api.get("/api/tasks/")
    key = Token.objects.get(user=user).key
    mirror.client().set(_cache_key(key), b"not json")
    assert token_queries(api) == 1


def test_authentication_works_with_redis_down(api: Any, private_redis: Any) -> None:
    private_redis.kill()
    assert token_queries(api) == 1


def test_a_wrong_token_is_refused(api: Any) -> None:
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/tasks/").status_code == 401


def test_the_cache_can_be_turned_off(api: Any, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 0
    assert token_queries(api) == 1
    assert token_queries(api) == 1
