"""A real headless Chromium for browser tests (loaded with ``pytest_plugins = ["tests.browser_support"]``).

Debian's chromium at /usr/bin/chromium (``make test`` installs it) is driven by
Playwright with the system browser: ``playwright install`` is never needed.
Screenshots go under ``test-artifacts/browser/`` (gitignored). It holds no
assertions (PYTEST_DONT_REWRITE: test modules import it before pytest loads it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

# Playwright's sync API runs an event loop in this thread; Django's ORM calls in
# the test body are still synchronous and safe.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"


@pytest.fixture
def page() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(20_000)
        try:
            yield tab
        finally:
            # Database connections opened while Playwright's loop runs belong to
            # that context: close them here, or PostgreSQL keeps a session that
            # blocks dropping the test database.
            connections.close_all()
            context.close()
            browser.close()
