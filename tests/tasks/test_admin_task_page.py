"""The task page seen through Django's test client: the live panel and its partial, the output pages and the text
download, the History button, the trash banner and mark, timestamps to the second."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import formats, timezone

from tasks import services
from tasks.admin import task_page
from tasks.audit import Channel
from tasks.models import Task
from tasks.selectors import task_outputs

pytestmark = pytest.mark.django_db

SECOND = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def staff_with(django_user_model, *codenames, username="operator"):
    user = django_user_model.objects.create_user(username, password="pw-operator-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks", codename__in=codenames))
    return user


@pytest.fixture
def viewer(django_user_model):
    return staff_with(django_user_model, "view_task")


def running(make_task, **fields):
    """A task claimed by a (pretend) worker, as a real attempt is."""
    task = make_task(**fields)
    services.transition(task.pk, "queued", actor="system:test", channel=Channel.SYSTEM, reason="test")
    task = services.claim(task.pk, worker_id="node@test:1:2")
    assert task is not None
    return task


def report(task: Task, fraction: float, phase: str) -> None:
    services.report_progress(
        task.pk, attempt=task.attempt_count, worker_id=task.worker_id, progress=fraction, phase=phase
    )


def write_lines(task: Task, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        services.record_output(
            task.pk, "stdout", f"line {number}", attempt=task.attempt_count, worker_id=task.worker_id
        )


def finish(task: Task) -> Task:
    return services.transition(task.pk, "completed", actor="system:test", channel=Channel.SYSTEM, reason="test")


def at_second(value) -> str:
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def urls(task_id) -> dict[str, str]:
    return {
        name: reverse(f"admin:tasks_task_{name}", args=[task_id])
        for name in ("live", "outputs", "outputs_text", "timeline")
    }


# --- The live panel.


def test_task_page_shows_the_live_panel_polling_while_the_task_runs(client, viewer, make_task):
    task = running(make_task, title="watch me")
    report(task, 5 / 12, "step 5 of 12")
    write_lines(task, 3)
    client.force_login(viewer)

    html = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    panel = html[html.index('id="crux-live"') : html.index("</section>")]
    assert f'hx-get="{urls(task.pk)["live"]}"' in panel and 'hx-trigger="every 1500ms"' in panel
    assert 'aria-valuenow="41.7"' in panel and "width:41.7%" in panel and "41.7 %" in panel
    assert "step 5 of 12" in panel and "1 of 3" in panel and ">running<" in panel
    assert "0.41666" not in html, "progress is a percentage, not a raw fraction"
    assert panel.index("line 0") < panel.index("line 1") < panel.index("line 2"), "oldest first"
    assert "node@test:1:2" in panel


def test_the_partial_follows_the_task_and_stops_polling_once_it_is_finished(client, viewer, make_task):
    task = running(make_task)
    client.force_login(viewer)
    live = urls(task.pk)["live"]

    first = client.get(live, headers={"HX-Request": "true"})
    assert first.status_code == 200 and first.templates[0].name == "admin/tasks/task/_live.html"
    body = first.content.decode()
    assert body.lstrip().startswith("<section") and "<html" not in body
    assert "hx-trigger" in body and "No output yet." in body and 'aria-valuenow="0.0"' in body

    report(task, 0.5, "halfway")
    write_lines(task, 2)
    second = client.get(live).content.decode()
    assert 'aria-valuenow="50.0"' in second and "halfway" in second and "line 1" in second

    finish(task)
    done = client.get(live).content.decode()
    assert ">completed<" in done
    assert "hx-trigger" not in done and "hx-get" not in done, "a finished task's panel polls no more"


def test_the_tail_shows_the_latest_lines_and_links_to_every_page(client, viewer, make_task, monkeypatch):
    monkeypatch.setattr(task_page, "TAIL_LINES", 3)
    monkeypatch.setattr(task_page, "OUTPUT_PAGE_SIZE", 2)
    task = running(make_task)
    write_lines(task, 5)
    client.force_login(viewer)

    response = client.get(urls(task.pk)["live"])
    assert [line.content for line in response.context["live"].tail.lines] == ["line 2", "line 3", "line 4"]
    html = response.content.decode()
    assert "the last 3 of 5 lines" in html and "line 1<" not in html
    assert f'href="{urls(task.pk)["outputs"]}?page=3"' in html
    assert f'href="{urls(task.pk)["outputs_text"]}"' in html


def test_output_pages_run_oldest_first_and_forgive_a_bad_page_number(client, viewer, make_task, monkeypatch):
    monkeypatch.setattr(task_page, "OUTPUT_PAGE_SIZE", 2)
    task = running(make_task)
    write_lines(task, 5)
    client.force_login(viewer)
    url = urls(task.pk)["outputs"]

    def lines(query: str) -> list[str]:
        response = client.get(url + query)
        assert response.status_code == 200
        return [line.content for line in response.context["page"]]

    assert lines("") == lines("?page=1") == ["line 0", "line 1"]
    assert lines("?page=3") == ["line 4"]
    assert lines("?page=abc") == ["line 0", "line 1"]
    assert lines("?page=99") == ["line 4"]
    html = client.get(url + "?page=2").content.decode()
    assert "Lines 3 to 4 of 5" in html and 'href="?page=1"' in html and 'href="?page=3"' in html


def test_download_streams_every_line_as_a_text_attachment_with_credentials_masked(client, viewer, make_task):
    task = running(make_task)
    write_lines(task, 3)
    secret = "sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH"
    services.record_output(
        task.pk, "log", f"calling the API with {secret}", attempt=task.attempt_count, worker_id=task.worker_id
    )
    services.record_output(
        task.pk, "artifact", "the report", attempt=task.attempt_count, worker_id=task.worker_id, file_path="out/r.pdf"
    )
    client.force_login(viewer)

    response = client.get(urls(task.pk)["outputs_text"])
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="task-{task.pk}-outputs.txt"'
    text = b"".join(response.streaming_content).decode()
    lines = text.splitlines()
    assert len(lines) == 5
    assert [line.split("] ", 1)[1] for line in lines[:3]] == ["line 0", "line 1", "line 2"]
    assert all(SECOND.match(line) for line in lines)
    assert lines[0].split(" [")[1].startswith("stdout]")
    assert secret not in text and "[REDACTED]" in lines[3]
    assert "[artifact] (out/r.pdf) the report" in lines[4]


# --- Who may see them.


def test_partials_pages_and_download_need_the_view_permission_and_a_known_task(
    client, django_user_model, viewer, make_task
):
    task = make_task()
    client.force_login(staff_with(django_user_model, "soft_delete_task", username="no-view"))
    for url in urls(task.pk).values():
        assert client.get(url).status_code == 403, url

    client.force_login(viewer)
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-task"):
        for url in urls(bad).values():
            assert client.get(url).status_code == 404, url
    for url in urls(task.pk).values():
        assert client.get(url).status_code == 200, url

    client.logout()
    for url in urls(task.pk).values():
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response.url, url


def test_a_live_panel_whose_session_expired_moves_the_whole_page_to_the_login(client, viewer, make_task):
    """htmx would follow the login redirect and paste the login form into the panel: the page goes there instead."""
    task = running(make_task)
    live = urls(task.pk)["live"]
    response = client.get(live, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "<form" not in response.content.decode()
    assert response["HX-Redirect"].startswith("/admin/login/?next=") and live in unquote(response["HX-Redirect"])
    client.force_login(viewer)
    assert "HX-Redirect" not in client.get(live, headers={"HX-Request": "true"})


# --- History, trash, timestamps.


def test_the_history_button_opens_the_timeline(client, viewer, make_task):
    task = make_task()
    client.force_login(viewer)
    page = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    history = reverse("admin:tasks_task_history", args=[task.pk])
    assert f'href="{history}"' in page
    response = client.get(history)
    assert response.status_code == 302 and response.url == urls(task.pk)["timeline"]
    assert "#1 Created" in client.get(response.url).content.decode()


def test_a_trashed_task_page_has_a_banner_with_who_when_why_and_restore(client, django_user_model, make_task):
    task = make_task(title="gone for now")
    deleter = django_user_model.objects.create_user("deleter", password="pw-deleter-1")
    task = services.soft_delete(task.pk, user=deleter, channel=Channel.API, reason="duplicate of the 02:00 run")
    page_url = reverse("admin:tasks_task_change", args=[task.pk])

    client.force_login(staff_with(django_user_model, "view_task", "restore_task"))
    html = client.get(page_url).content.decode()
    banner = html[html.index('id="crux-trash-banner"') : html.index("</div>", html.index('id="crux-trash-banner"'))]
    assert at_second(task.deleted_at) in banner and "deleter" in banner and "duplicate of the 02:00 run" in banner
    restore = re.search(r'id="crux-restore-link" href="([^"]+)"', banner)
    assert restore is not None
    link = restore.group(1).replace("&amp;", "&")
    assert link.startswith(reverse("admin:tasks_task_confirm", args=["restore"]) + f"?ids={task.pk}")
    assert client.get(link).status_code == 200

    client.force_login(staff_with(django_user_model, "view_task", username="reader"))
    html = client.get(page_url).content.decode()
    assert 'id="crux-trash-banner"' in html and 'id="crux-restore-link"' not in html

    alive = make_task()
    assert (
        'id="crux-trash-banner"' not in client.get(reverse("admin:tasks_task_change", args=[alive.pk])).content.decode()
    )


def test_the_list_marks_trashed_tasks_and_shows_duration_and_attempts(client, viewer, make_task):
    task = finish(running(make_task, title="finished one"))
    gone = services.soft_delete(make_task(title="thrown away").pk, user=viewer, channel=Channel.ADMIN, reason="dup")
    client.force_login(viewer)
    response = client.get(reverse("admin:tasks_task_changelist"))
    html = response.content.decode()
    rows = {row.split("</tr>")[0] for row in html.split("<tr")[1:]}
    [done_row] = [row for row in rows if "finished one" in row]
    [gone_row] = [row for row in rows if "thrown away" in row]
    assert f'class="field-duration">{task_page.duration_label(task)}<' in done_row
    assert 'class="field-attempts">1/3<' in done_row
    assert 'class="crux-deleted"' in gone_row and "in trash" in gone_row and at_second(gone.deleted_at) in gone_row
    assert "crux-deleted" not in done_row


def test_timestamps_show_seconds_on_the_list_page_timeline_and_trash(client, viewer, make_task):
    task = finish(running(make_task, title="timed"))
    gone = services.soft_delete(make_task().pk, user=viewer, channel=Channel.ADMIN, reason="old")
    client.force_login(viewer)
    created = at_second(task.created_at)
    assert SECOND.fullmatch(created)

    page = client.get(reverse("admin:tasks_task_change", args=[task.pk])).content.decode()
    for value in (task.created_at, task.started_at, task.completed_at):
        assert at_second(value) in page
    history_rows = re.findall(r'<td class="field-created_at">\s*<p>([^<]+)</p>', page)
    assert history_rows and all(SECOND.fullmatch(text.strip()) for text in history_rows), history_rows
    assert not re.search(r"\b(a\.m\.|p\.m\.|noon|midnight)", page)

    assert created in client.get(reverse("admin:tasks_task_changelist")).content.decode()
    timeline = client.get(urls(task.pk)["timeline"]).content.decode()
    assert created in timeline
    trash = client.get(reverse("admin:tasks_task_trash")).content.decode()
    assert at_second(gone.deleted_at) in trash and at_second(gone.created_at) in trash


def test_the_text_log_is_written_in_batches_of_whole_lines(make_task):
    task = running(make_task)
    write_lines(task, 5)
    chunks = list(task_page.output_text(task_outputs(task.pk), batch=2))
    assert [chunk.count("\n") for chunk in chunks] == [2, 2, 1]
    assert "".join(chunks).count("line ") == 5
