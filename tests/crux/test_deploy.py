"""Safe deployment: no start without a key, `check --deploy` clean with TLS on, a strict CSP on every page."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

pytest_plugins = ["tests.browser_support"]

ROOT = Path(__file__).resolve().parents[2]
# A key strong enough for Django's own check (50+ characters, many distinct ones), as `make keys` writes them.
STRONG_KEY = secrets.token_urlsafe(50)
TLS_ENV = {"TLS": "true", "ALLOWED_HOSTS": "crux.example.com", "CSRF_TRUSTED_ORIGINS": "https://crux.example.com"}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a child process with this environment, minus any SECRET_KEY unless one is given.

    DJANGO_ALLOW_ASYNC_UNSAFE (set for the browser tests) is left out too: `check --deploy` rightly refuses it.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=120
    )


def test_outside_debug_without_a_key_the_project_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    refused = manage("check", DEBUG="false", SECRET_KEY_FILE=str(missing))
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr
    assert "SECRET_KEY" in refused.stderr and str(missing) in refused.stderr and "make keys" in refused.stderr
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    assert manage("check", DEBUG="false", SECRET_KEY_FILE=str(empty)).returncode != 0
    debug = manage("check", DEBUG="true", SECRET_KEY_FILE=str(missing))
    assert debug.returncode == 0, debug.stderr


def test_the_key_comes_from_the_environment_else_from_its_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("key-from-the-file\n")
    show = ("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    from_file = manage(*show, SECRET_KEY_FILE=str(key_file))
    assert from_file.stdout.strip().splitlines()[-1] == "key-from-the-file", from_file.stderr
    from_env = manage(*show, SECRET_KEY="key-from-the-env", SECRET_KEY_FILE=str(key_file))
    assert from_env.stdout.strip().splitlines()[-1] == "key-from-the-env", from_env.stderr


def test_check_deploy_is_clean_with_tls_on_and_names_what_is_missing_without() -> None:
    clean = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=STRONG_KEY, DEBUG="false", **TLS_ENV)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    plain = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=STRONG_KEY, DEBUG="false")
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr


def test_with_tls_plain_http_is_redirected_except_the_health_probes(settings: Any, db: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True
    client = Client()
    redirect = client.get("/admin/login/")
    assert redirect.status_code == 301 and redirect["Location"].startswith("https://")
    assert client.get("/api/health/").status_code != 301
    served = client.get("/admin/login/", secure=True)
    assert served.status_code == 200
    assert served["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


# --- Content-Security-Policy.
def csp_directives(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.wsgi_request.path}"
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def assert_strict(response: Any) -> None:
    directives = csp_directives(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"], "scripts only from our own origin, never inline"
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    for values in directives.values():
        assert not [v for v in values if v.startswith(("http:", "https:", "*")) or "//" in v], values


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "logged_in"),
    [
        ("/admin/login/", False),
        ("/admin/", True),
        ("/admin/tasks/task/", True),
        ("/api/", True),
        ("/api/docs/", False),
        ("/api/auth/login/", False),
        ("/api/tasks/", True),
    ],
)
def test_every_html_page_carries_a_strict_policy(
    path: str, logged_in: bool, client: Client, django_user_model: Any
) -> None:
    if logged_in:
        client.force_login(django_user_model.objects.create_superuser("csp-root", "root@localhost", "pw-root-123"))
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert_strict(response)


@pytest.mark.django_db
def test_an_html_error_page_carries_the_policy_too(client: Client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    assert_strict(response)


SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)


@pytest.mark.django_db
def test_swagger_ui_loads_every_script_from_its_own_origin(client: Client) -> None:
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    scripts = SCRIPT.findall(docs.content.decode())
    assert len(scripts) >= 3
    sources = []
    for attributes, body in scripts:
        assert not body.strip(), "an inline script would be blocked by script-src 'self'"
        src = re.search(r'src="([^"]+)"', attributes)
        assert src and src.group(1).startswith("/") and not src.group(1).startswith("//"), attributes
        sources.append(src.group(1).replace("&amp;", "&"))
    init = [src for src in sources if src.startswith("/api/docs/")]
    assert len(init) == 1, sources
    script = client.get(init[0])
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content and b"/api/schema/" in script.content


# --- In a real browser: the pages work under the policy, and nothing trips it.
@pytest.mark.slow
def test_a_browser_renders_docs_browsable_api_and_dashboard_without_a_policy_violation(
    live_db: Any, live_server: Any, page: Any, django_user_model: Any
) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("csp-browser", "b@localhost", "pw-browser-123")
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(f"{page.url}: {message.text} {message.location}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    remote: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(live_server.url) else remote.append(request.url))

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "csp-browser")
    page.fill("#id_password", "pw-browser-123")
    page.locator('input[type="submit"]').click()
    expect(page.locator("#crux-dashboard")).to_be_visible()

    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator("#swagger-ui .info .title")).to_contain_text("Crux API")
    expect(page.locator("#swagger-ui .opblock").first).to_be_visible()

    page.goto(f"{live_server.url}/api/tasks/")
    expect(page.locator(".response-info")).to_be_visible()
    page.locator(".navbar .dropdown-toggle").click()
    with page.expect_navigation():
        page.locator("#crux-logout").click()
    assert "sessionid" not in {cookie["name"] for cookie in page.context.cookies()}, "the log-out form works"

    assert violations == []
    assert [url for url in remote if not url.startswith(("data:", "blob:"))] == []
