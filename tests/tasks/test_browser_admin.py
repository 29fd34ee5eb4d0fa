"""A real headless Chromium drives the admin: soft delete through the confirmation page, trash, restore, timeline.

Screenshots of each step are saved under ``test-artifacts/browser/`` (gitignored);
the browser comes from ``tests/browser_support.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from tasks.models import TaskHistory
from tests.browser_support import ARTIFACTS

pytest_plugins = ["tests.browser_support"]
pytestmark = pytest.mark.slow


def shot(tab, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000, f"{path} looks empty"
    return path


def run_action(tab, task_id: str, action: str) -> None:
    """Tick one row of the changelist, choose an action and press Go."""
    tab.locator(f'input.action-select[value="{task_id}"]').check()
    tab.select_option('select[name="action"]', action)
    tab.locator('button[name="index"]').first.click()
    tab.wait_for_selector("#crux-confirm-form")


def test_staff_soft_deletes_finds_in_trash_restores_and_opens_timeline(
    live_db, live_server, page, django_user_model, make_task
):
    from playwright.sync_api import expect

    operator = django_user_model.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    operator.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="tasks", codename__in=["view_task", "soft_delete_task", "restore_task"]
        )
    )
    task = make_task(title="Nightly report for ACME", role="reporter", provider="openai")
    make_task(title="Another task that stays")
    short = str(task.pk)[:8]
    base = live_server.url

    # Log in through the real form.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-operator-1")
    page.locator('input[type="submit"]').click()
    expect(page.locator("#crux-dashboard")).to_be_visible()
    expect(page.locator("#crux-states")).to_contain_text("pending")
    shot(page, "01-dashboard")

    # The task list, then soft delete through the confirmation page.
    page.goto(f"{base}/admin/tasks/task/")
    expect(page.locator("#result_list")).to_contain_text("Nightly report for ACME")
    shot(page, "02-task-list")
    run_action(page, str(task.pk), "soft_delete_selected")
    expect(page.locator("#crux-affected")).to_contain_text(short)
    expect(page.locator("#crux-affected tbody tr")).to_have_count(1)
    expect(page.locator("#crux-confirm")).to_have_text("Yes, soft-delete 1 task")
    shot(page, "03-confirm-soft-delete")
    page.locator("#crux-confirm").click()  # without a reason: the browser/server refuse
    expect(page.locator("#crux-confirm-form")).to_be_visible()
    page.fill('textarea[name="reason"]', "Duplicate of the 02:00 run (ticket OPS-17)")
    page.locator("#crux-confirm").click()
    expect(page.locator(".messagelist .success")).to_contain_text(f"Soft-deleted 1 task: {short}")
    shot(page, "04-after-soft-delete")

    # The trash shows it with who, when and why.
    page.locator("a.crux-trashlink").click()
    expect(page).to_have_url(re.compile(r"/admin/tasks/task/trash/"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Nightly report for ACME")
    expect(rows.first).to_contain_text("operator")
    expect(rows.first).to_contain_text("Duplicate of the 02:00 run")
    shot(page, "05-trash")

    # Restore it from the trash.
    run_action(page, str(task.pk), "restore_selected")
    expect(page.locator("#crux-affected")).to_contain_text(short)
    shot(page, "06-confirm-restore")
    page.fill('textarea[name="reason"]', "Not a duplicate after all")
    page.locator("#crux-confirm").click()
    expect(page.locator(".messagelist .success")).to_contain_text(f"Restored 1 task: {short}")
    expect(page).to_have_url(re.compile(r"/admin/tasks/task/trash/"))
    expect(page.locator("#result_list tbody tr")).to_have_count(0)
    shot(page, "07-trash-after-restore")

    # Its timeline, from the task page.
    page.goto(f"{base}/admin/tasks/task/{task.pk}/change/")
    expect(page.locator("#content-main")).to_contain_text("Audit trail")
    shot(page, "08-task-page")
    page.locator("a.crux-timeline-link").click()
    expect(page).to_have_url(re.compile(rf"/admin/tasks/task/{task.pk}/timeline/"))
    events = page.locator("#crux-events li[data-event]")
    expect(events).to_have_count(3)
    expect(page.locator('li[data-event="soft_delete"]')).to_contain_text("Duplicate of the 02:00 run")
    expect(page.locator('li[data-event="restore"]')).to_contain_text("Not a duplicate after all")
    expect(page.locator('li[data-event="restore"]')).to_contain_text("operator")
    expect(page.locator("#crux-state-bar .crux-seg")).to_have_count(1)
    expect(page.locator("#crux-trash-bar .crux-band")).to_have_count(1)
    shot(page, "09-timeline")

    rows = list(
        TaskHistory.objects.filter(task=task).order_by("seq").values_list("event", "actor", "channel", "reason")
    )
    assert rows[1:] == [
        ("soft_delete", "operator", "admin", "Duplicate of the 02:00 run (ticket OPS-17)"),
        ("restore", "operator", "admin", "Not a duplicate after all"),
    ]
    task.refresh_from_db()
    assert task.deleted_at is None
