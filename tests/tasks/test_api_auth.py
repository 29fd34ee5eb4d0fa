"""Token authentication served from Redis (revocation and deactivation still apply at once); login lockout."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.db import connection
from django.test import Client
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


# --- Login lockout (django-axes): both password doors, counted per username and client address together.
LOGIN_DOORS = ["/admin/login/", "/api/auth/login/"]
WRONG_TRIES = 40


def log_in(door: str, username: str, password: str, address: str = "127.0.0.1") -> Any:
    return Client().post(door, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.wsgi_request.session


@pytest.fixture
def operator(django_user_model: Any) -> Any:
    """A staff account: the admin login admits staff only, the API's admits anyone."""
    return django_user_model.objects.create_user("operator", password="pw-operator-123", is_staff=True)


@pytest.mark.django_db
@pytest.mark.parametrize("door", LOGIN_DOORS)
def test_repeated_wrong_passwords_lock_the_client_out_with_429(
    door: str, operator: Any, settings: Any, caplog: Any
) -> None:
    answers = [log_in(door, "operator", f"wrong-{i}").status_code for i in range(WRONG_TRIES)]
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[: limit - 1] == [200] * (limit - 1), "below the limit the form answers as usual"
    assert answers[limit - 1 :] == [429] * (WRONG_TRIES - limit + 1)
    assert AccessAttempt.objects.get(username="operator").failures_since_start == WRONG_TRIES
    assert "Locking out" in caplog.text and "127.0.0.1" in caplog.text
    assert "wrong-" not in caplog.text, "a tried password is never logged"

    right = log_in(door, "operator", "pw-operator-123")
    assert right.status_code == 429 and not logged_in(right), "the right password is refused while locked out"
    assert int(right["Retry-After"]) == int(settings.AXES_COOLOFF_TIME * 3600)
    if door.startswith("/api/"):
        assert right["Content-Type"] == "application/json" and "detail" in right.json()
    else:
        assert right["Content-Type"].startswith("text/html") and b'id="crux-lockout"' in right.content


@pytest.mark.django_db
@pytest.mark.parametrize("door", LOGIN_DOORS)
def test_the_lockout_holds_one_username_from_one_address_only(door: str, operator: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_user("colleague", password="pw-colleague-123", is_staff=True)
    for i in range(WRONG_TRIES):
        log_in(door, "operator", f"wrong-{i}")
    assert log_in(door, "operator", "pw-operator-123").status_code == 429
    assert logged_in(log_in(door, "colleague", "pw-colleague-123")), "another user from the same address"
    assert logged_in(log_in(door, "operator", "pw-operator-123", address="10.0.0.7")), "the user from elsewhere"


@pytest.mark.django_db
@pytest.mark.parametrize("door", LOGIN_DOORS)
def test_staff_unlock_with_the_command(door: str, operator: Any) -> None:
    for i in range(WRONG_TRIES):
        log_in(door, "operator", f"wrong-{i}")
    assert log_in(door, "operator", "pw-operator-123").status_code == 429
    call_command("axes_reset_username", "operator")
    assert logged_in(log_in(door, "operator", "pw-operator-123"))


@pytest.mark.django_db
def test_staff_see_and_unlock_lockouts_in_the_admin(operator: Any, superuser: Any) -> None:
    for i in range(WRONG_TRIES):
        log_in("/admin/login/", "operator", f"wrong-{i}")
    attempt = AccessAttempt.objects.get(username="operator")
    admin = Client()
    admin.force_login(superuser)
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"operator" in listing.content
    assert b"wrong-" not in listing.content and b"pw-operator" not in listing.content
    unlock = admin.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}
    )
    assert unlock.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert logged_in(log_in("/admin/login/", "operator", "pw-operator-123"))


@pytest.mark.django_db
def test_the_api_session_login_authenticates_api_calls(operator: Any) -> None:
    """DRF's SessionAuthentication reads the session axes let through; it never re-checks a password."""
    client = Client()
    assert client.get("/api/tasks/").status_code in (401, 403)
    assert client.post("/api/auth/login/", {"username": "operator", "password": "pw-operator-123"}).status_code == 302
    assert client.get("/api/tasks/").status_code == 200


@pytest.mark.django_db
def test_a_login_without_a_request_still_works(operator: Any) -> None:
    """Django's test client logs in without a request: not watched (no client address), never an error."""
    assert Client().login(username="operator", password="pw-operator-123") is True
    assert Client().login(username="operator", password="wrong") is False
    assert not AccessAttempt.objects.exists()
