"""Real headless Chromium on the Workers page and the dashboard: a worker started during the test appears without a
reload, one killed with SIGKILL drops out of the live list, and the dashboard's queue depth follows submissions
without a reload.

Screenshots go to ``test-artifacts/browser/`` (``workers.png``, ``dashboard-live.png``).
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from django.contrib.auth.models import Permission

from tasks.models import Task
from tests.conftest import TEST_QUEUE
from tests.tasks import test_worker
from tests.tasks.test_browser_admin import shot

pytest_plugins = ["tests.browser_support"]
pytestmark = pytest.mark.slow
cluster = test_worker.cluster  # real workers on a private broker, as tests/tasks/test_worker.py starts them

# Generous bounds on a hang: a worker starting on a loaded 2-core machine takes seconds.
STARTED = 90_000
DROPPED = 30_000


def log_in(tab, base: str, django_user_model) -> None:
    """A staff user who may view tasks (nothing else), signed in through the real form."""
    viewer = django_user_model.objects.create_user("watcher", password="pw-watcher-1", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks", codename="view_task"))
    tab.goto(f"{base}/admin/login/?next=/admin/")
    tab.fill("#id_username", "watcher")
    tab.fill("#id_password", "pw-watcher-1")
    tab.locator('input[type="submit"]').click()
    tab.wait_for_selector("#content-main")


def mark_page(tab) -> None:
    """A mark that a reload would wipe out: it must still be there after the page updated itself."""
    tab.evaluate("window.cruxNotReloaded = true")


def not_reloaded(tab) -> bool:
    return bool(tab.evaluate("window.cruxNotReloaded === true"))


def test_workers_page_shows_a_started_worker_and_drops_a_killed_one_and_the_dashboard_follows(
    cluster, live_server, page, django_user_model, settings
):
    from playwright.sync_api import expect

    settings.WORKER_STALE_SECONDS = 4  # the page's judgement (this process serves it)
    cluster.env["WORKER_HEARTBEAT_SECONDS"] = "1"  # the workers' reports
    log_in(page, live_server.url, django_user_model)
    page.locator("#nav-sidebar a, #content-main a", has_text="Workers").first.click()
    expect(page).to_have_url(re.compile(r"/admin/tasks/worker/$"))
    expect(page.locator("#crux-no-workers")).to_be_visible()
    mark_page(page)

    first = cluster.worker(1)
    first_block = page.locator('.crux-worker[data-worker^="w0@"]')
    expect(first_block).to_be_visible(timeout=STARTED)
    expect(first_block.locator(".crux-queues")).to_contain_text(TEST_QUEUE)
    expect(first_block.locator("tr.crux-idle-process")).to_have_count(1)  # its one pool process, idle

    [task_id] = cluster.submit(1, "sleep", payload={"seconds": 120, "steps": 120})
    row = first_block.locator(f'tr.crux-running[data-task="{task_id}"]')
    expect(row).to_be_visible(timeout=STARTED)
    expect(row.locator("a")).to_have_attribute("href", f"/admin/tasks/task/{task_id}/change/")
    expect(row).to_contain_text(re.compile(r"step \d+ of 120"))
    worker_id = Task.objects.get(pk=task_id).worker_id
    assert row.locator("td").first.inner_text().strip() == worker_id.rsplit(":", 1)[1]

    cluster.worker(1)
    second_block = page.locator('.crux-worker[data-worker^="w1@"]')
    expect(second_block).to_be_visible(timeout=STARTED)
    expect(page.locator("#crux-workers-summary")).to_contain_text("2 workers alive")
    assert not_reloaded(page)
    shot(page, "workers")

    os.killpg(first.pid, signal.SIGKILL)  # the main process and its pool: no goodbye
    first.wait(timeout=30)
    expect(first_block).to_have_count(0, timeout=DROPPED)
    expect(second_block).to_be_visible()
    expect(page.locator('#crux-gone-workers tr[data-worker^="w0@"]')).to_contain_text("silent")
    expect(page.locator("#crux-workers-summary")).to_contain_text("1 worker alive")
    assert not_reloaded(page)
    shot(page, "workers-after-kill")

    # The dashboard: the survivor completes a few tasks (throughput, run times); then, with no worker left to take
    # them, submitted tasks wait in the queue and the page shows them.
    test_worker.wait_until_finished(cluster.submit(3, "sleep", payload={"seconds": 0.2, "steps": 1}), cluster, 90)
    cluster.stop()
    page.goto(f"{live_server.url}/admin/")
    queued = page.locator(f'#crux-queues tr[data-queue="{TEST_QUEUE}"] .crux-queued')
    expect(queued).to_have_text("0")
    mark_page(page)
    cluster.submit(3, "echo")
    expect(queued).to_have_text("3", timeout=DROPPED)
    expect(page.locator(f'#crux-queues tr[data-queue="{TEST_QUEUE}"] .crux-oldest')).to_have_text(re.compile(r"\d"))
    expect(page.locator("#crux-workers-count")).to_have_text("0", timeout=DROPPED)
    expect(page.locator("#crux-workers-link")).to_have_attribute("href", "/admin/tasks/worker/")
    expect(page.locator("#crux-finished-total")).to_have_text("3")
    expect(page.locator("#crux-p50")).to_have_text(re.compile(r"\d+ ms|\d+\.\d s"))
    assert not_reloaded(page)
    shot(page, "dashboard-live")
