"""Real headless Chromium: a running task's page advances by itself (progress bar, output tail, badge) without a
reload; the task list fits 1440 px with duration, attempts and the trash mark; a trashed task's page has its banner.

Screenshots go to ``test-artifacts/browser/`` (``task-page-live.png``, ``task-list-1440.png``,
``trashed-task-banner.png``).
"""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import Permission

from tasks import services
from tasks.audit import Channel
from tasks.models import Task, TaskOutput
from tests.tasks import test_worker
from tests.tasks.test_browser_admin import shot
from tests.tasks.test_worker import Cluster

pytest_plugins = ["tests.browser_support"]
pytestmark = pytest.mark.slow
cluster = test_worker.cluster  # a real worker on a private broker, as tests/tasks/test_worker.py starts them


def log_in(tab, base: str, django_user_model) -> None:
    """A staff user who may view tasks and restore them (nothing else), signed in through the real form."""
    viewer = django_user_model.objects.create_user("watcher", password="pw-watcher-1", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="tasks", codename__in=["view_task", "restore_task"])
    )
    tab.goto(f"{base}/admin/login/?next=/admin/")
    tab.fill("#id_username", "watcher")
    tab.fill("#id_password", "pw-watcher-1")
    tab.locator('input[type="submit"]').click()
    tab.wait_for_selector("#content-main")


def test_the_task_list_fits_1440_pixels_and_marks_trashed_tasks(
    live_db, live_server, page, django_user_model, make_task
):
    from playwright.sync_api import expect

    done = make_task(
        title="Quarterly revenue reconciliation for the EMEA subsidiaries", role="accountant", provider="anthropic"
    )
    for state in ("queued", "running", "completed"):
        done = services.transition(done.pk, state, actor="system:test", channel=Channel.SYSTEM, reason="test")
    trashed = make_task(title="Duplicate nightly import of the warehouse inventory", role="importer", provider="openai")
    services.soft_delete(trashed.pk, user=trashed.owner, channel=Channel.API, reason="duplicate of the 02:00 run")
    for i in range(5):
        make_task(
            title=f"Summarise the customer feedback batch number {i} with a long title to wrap", role="summariser"
        )

    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server.url, django_user_model)
    page.goto(f"{live_server.url}/admin/tasks/task/")
    expect(page.locator("#result_list")).to_be_visible()
    shot(page, "task-list-1440")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1440
    # Nor does the table scroll inside its own box (the admin's .results hides overflow behind a scroll bar).
    box = page.evaluate(
        "(() => { const r = document.querySelector('.results'); return [r.scrollWidth, r.clientWidth]; })()"
    )
    assert box[0] <= box[1], box

    def right_edge(locator) -> float:
        found = locator.bounding_box()
        assert found is not None
        return found["x"] + found["width"]

    done_row = page.locator("#result_list tbody tr", has_text="Quarterly revenue")
    expect(done_row.locator("td.field-duration")).not_to_have_text("-")
    expect(done_row.locator("td.field-attempts")).to_have_text("0/3")
    trashed_row = page.locator("#result_list tbody tr", has_text="Duplicate nightly import")
    mark = trashed_row.locator(".crux-deleted")
    expect(mark).to_have_text("in trash")
    for cell in (done_row.locator("td.field-duration"), done_row.locator("td.field-attempts"), mark):
        assert right_edge(cell) <= 1440
    # The trashed row is styled apart from the others.
    background = trashed_row.locator("td.field-title").evaluate("td => getComputedStyle(td).backgroundColor")
    plain = done_row.locator("td.field-title").evaluate("td => getComputedStyle(td).backgroundColor")
    assert background != plain

    # The trash fits too, timestamps to the second.
    page.locator("a.crux-trashlink").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1440
    box = page.evaluate(
        "(() => { const r = document.querySelector('.results'); return [r.scrollWidth, r.clientWidth]; })()"
    )
    assert box[0] <= box[1], box
    expect(page.locator("#result_list td.field-deleted_when")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    )

    # The trashed task's page: a banner with who, when and why, and the way back.
    page.locator("#result_list tbody tr a", has_text="Duplicate nightly import").first.click()
    banner = page.locator("#crux-trash-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("deleted by alice")
    expect(banner).to_contain_text("duplicate of the 02:00 run")
    expect(banner).to_contain_text(re.compile(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    shot(page, "trashed-task-banner")
    banner.locator("#crux-restore-link").click()
    expect(page.locator("#crux-affected")).to_contain_text(str(trashed.pk)[:8])


def wait_for(condition, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout}s\n{cluster.logs()}")
        time.sleep(0.1)


def test_a_running_task_page_advances_by_itself_without_a_reload(
    cluster, live_server, page, django_user_model, tmp_path
):
    from playwright.sync_api import expect

    gate = tmp_path / "carry-on"
    cluster.env["TASK_HANDLERS_EXTRA"] += ",ticker=tests.handlers.ticker"
    cluster.worker(1)
    [task_id] = cluster.submit(1, "ticker", payload={"steps": 10, "interval": 0.3, "gate": str(gate)})
    # The task holds after its first step (10 %, one line) until the page is open.
    wait_for(
        lambda: (
            Task.objects.filter(pk=task_id, progress__gt=0).exists()
            and TaskOutput.objects.filter(task_id=task_id).exists()
        ),
        90,
        "the first step",
        cluster,
    )

    log_in(page, live_server.url, django_user_model)
    page.goto(f"{live_server.url}/admin/tasks/task/{task_id}/change/")
    page.evaluate("window.cruxSamePage = true")  # gone if the page reloads or navigates
    live_requests: list[str] = []
    page.on("request", lambda request: live_requests.append(request.url) if "/live/" in request.url else None)
    panel = page.locator("#crux-live")
    expect(panel).to_have_attribute("hx-trigger", re.compile(r"^every "))
    expect(page.locator("#crux-live-state")).to_contain_text("running")

    def moment() -> tuple[float, float, list[str]]:
        """What the page shows now: the percentage, the bar's drawn width, the tail's lines."""
        percent = float(page.locator("#crux-progress").get_attribute("aria-valuenow") or "nan")
        width = page.locator("#crux-progress-fill").evaluate("fill => fill.getBoundingClientRect().width")
        return percent, width, page.locator("#crux-tail-lines .crux-line .crux-line-text").all_inner_texts()

    first = moment()
    assert first[0] == 10.0 and first[1] > 0 and first[2] == ["tick 1 of 10"], first
    gate.touch()

    # Some refreshes later (read from the page; the page's CSP forbids evaluating a predicate inside it).
    expect(page.locator("#crux-progress")).to_have_attribute(
        "aria-valuenow", re.compile(r"^([5-9]\d|100)\.\d$"), timeout=60_000
    )
    page.wait_for_timeout(700)  # the bar's width eases to its new value
    second = moment()
    assert second[0] > first[0] and second[1] > first[1], (first, second)
    assert len(second[2]) > len(first[2]) and second[2][0] == "tick 1 of 10", "new lines arrive at the bottom"
    expect(page.locator("#crux-progress-label")).to_contain_text(f"{second[0]:.1f} %")
    expect(page.locator("#crux-phase")).to_contain_text("step")
    shot(page, "task-page-live")

    expect(page.locator("#crux-live-state")).to_contain_text("completed", timeout=60_000)
    final = moment()
    assert final[0] == 100.0 and final[2] == [f"tick {n} of 10" for n in range(1, 11)], final
    assert page.evaluate("window.cruxSamePage") is True, "the page was never reloaded"
    assert live_requests, "the panel was refreshed by its partial"

    # Finished: the last refresh dropped the trigger, and no request follows; the panel says the page behind it is
    # older and links to a fresh one.
    expect(panel).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(page.locator("#crux-live-finished a")).to_have_attribute("href", f"/admin/tasks/task/{task_id}/change/")
    sent = len(live_requests)
    page.wait_for_timeout(3500)
    assert len(live_requests) == sent
