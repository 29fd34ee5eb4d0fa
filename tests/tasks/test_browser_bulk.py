"""A real headless Chromium: a bulk soft delete over the limit is refused on its confirmation page before anything
changes; one within the limit (above the per-minute threshold) is applied whole; a purged task is restored from
the purge ledger; the deletion breaker is acknowledged with its button.

Screenshots: ``bulk-refused``, ``bulk-applied``, ``purge-ledger-restore``, ``breaker-acknowledge``.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from retention.breaker import DeletionsSuspended, breaker
from retention.models import DeletionEvent, PurgeLedger
from retention.services import purge
from tasks import services
from tasks.audit import Channel
from tasks.models import Task, TaskHistory
from tests.retention.test_retention import finished
from tests.tasks.test_browser_admin import shot

pytest_plugins = ["tests.browser_support"]
pytestmark = pytest.mark.slow

PASSWORD = "pw-operator-1"


def operator_with(django_user_model, *codenames):
    user = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def log_in(tab, base: str) -> None:
    from playwright.sync_api import expect

    tab.goto(f"{base}/admin/login/?next=/admin/")
    tab.fill("#id_username", "operator")
    tab.fill("#id_password", PASSWORD)
    tab.locator('input[type="submit"]').click()
    expect(tab.locator("#user-tools")).to_be_visible()


def select_and_run(tab, base: str, tasks, action: str) -> None:
    tab.goto(f"{base}/admin/tasks/task/")
    for task in tasks:
        tab.locator(f'input.action-select[value="{task.pk}"]').check()
    tab.select_option('select[name="action"]', action)
    tab.locator('button[name="index"]').first.click()
    tab.wait_for_selector(".crux-confirm")


def test_a_bulk_over_the_limit_is_refused_beforehand_and_one_within_it_is_applied_whole(
    live_db, live_server, page, django_user_model, make_task, settings
):
    from playwright.sync_api import expect

    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 3
    settings.DELETE_BULK_MAX = 5
    settings.DELETE_TASKS_PER_MINUTE = 100
    operator_with(django_user_model, "view_task", "soft_delete_task")
    tasks = [make_task(title=f"Bulk candidate {i}") for i in range(6)]
    base = live_server.url
    log_in(page, base)

    select_and_run(page, base, tasks, "soft_delete_selected")
    expect(page.locator("#crux-affected tbody tr")).to_have_count(6)
    expect(page.locator("#crux-refusal")).to_contain_text("over the limit of one bulk soft delete")
    expect(page.locator("#crux-refusal")).to_contain_text("DELETE_BULK_MAX = 5")
    expect(page.locator("#crux-confirm")).to_have_count(0)
    shot(page, "bulk-refused")
    assert Task.objects.deleted().count() == 0
    assert not DeletionEvent.objects.exists() and not breaker().is_tripped

    chosen = tasks[:4]  # more than the 3 deletions a minute, within the bulk limit of 5
    select_and_run(page, base, chosen, "soft_delete_selected")
    expect(page.locator("#crux-affected tbody tr")).to_have_count(4)
    expect(page.locator("#crux-refusal")).to_have_count(0)
    page.fill('textarea[name="reason"]', "Duplicates of the nightly run (OPS-40)")
    page.locator("#crux-confirm").click()
    expect(page.locator(".messagelist .success")).to_contain_text("Soft-deleted 4 tasks")
    expect(page.locator("#crux-deletion-breaker")).to_have_count(0)
    shot(page, "bulk-applied")
    assert set(Task.objects.deleted().values_list("pk", flat=True)) == {t.pk for t in chosen}
    event = DeletionEvent.objects.get()
    assert (event.task_count, event.actor, event.channel) == (4, "operator", "admin")
    assert not breaker().is_tripped


def test_restore_from_the_purge_ledger_and_acknowledge_the_breaker_with_buttons(
    live_db, live_server, page, django_user_model, make_task, user, settings, tmp_path
):
    from playwright.sync_api import expect

    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100
    operator_with(
        django_user_model,
        "view_task",
        "view_purgeledger",
        "restore_purgeledger",
        "view_deletionbreaker",
        "acknowledge_deletionbreaker",
    )
    task = finished(make_task, title="Quarterly summary, purged")
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    entry = PurgeLedger.objects.get(task_id=task.pk)
    base = live_server.url
    log_in(page, base)

    page.goto(f"{base}/admin/retention/purgeledger/")
    page.get_by_role("link", name="Restore from archive…").click()
    expect(page.locator("#crux-ledger-entry")).to_contain_text(str(task.pk))
    page.fill('textarea[name="reason"]', "The customer still needs it (OPS-41)")
    shot(page, "purge-ledger-restore")
    page.locator("#crux-confirm").click()
    expect(page).to_have_url(re.compile(rf"/admin/tasks/task/{task.pk}/change/"))
    expect(page.locator(".messagelist .success")).to_contain_text("restored")
    last = TaskHistory.objects.filter(task_id=task.pk).order_by("-seq").first()
    assert (last.event, last.actor, last.channel) == ("unarchive", "operator", "admin")
    entry.refresh_from_db()
    assert entry.restored_by == "operator"

    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    with pytest.raises(DeletionsSuspended):
        services.soft_delete(make_task().pk, user=user, channel=Channel.API, reason="a script in a loop")
    page.goto(f"{base}/admin/")
    page.locator("#crux-deletion-breaker a").click()
    expect(page.locator("#crux-breaker-state")).to_contain_text("Deletions are suspended")
    expect(page.locator("#crux-acknowledge")).to_be_visible()
    shot(page, "breaker-acknowledge")
    page.locator("#crux-acknowledge").click()
    expect(page.locator(".messagelist .success")).to_contain_text("Deletion spike acknowledged")
    expect(page.locator("#crux-breaker-state")).to_contain_text("Deletions are allowed")
    state = breaker()
    assert not state.is_tripped and state.acknowledged_by == "operator"
