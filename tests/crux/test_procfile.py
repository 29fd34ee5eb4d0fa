"""The Procfile's release and web lines really set up and serve the admin and the API; its housekeeping line
consumes the housekeeping queue. The processes use a Redis server of the test's own: a test never touches a
running instance's keys."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RUN_PREFIX, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_release_then_web_serve_admin_login_and_api(tmp_path, private_redis):
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.sqlite3'}",
        "REDIS_URL": private_redis.url,
        "CELERY_BROKER_URL": private_redis.url,
        "REDIS_KEY_PREFIX": RUN_PREFIX,
        "WEB_CONCURRENCY": "1",
    }
    honcho = [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
    release = subprocess.run([*honcho, "start", "release"], env=env, capture_output=True, text=True, timeout=180)
    assert release.returncode == 0, release.stdout + release.stderr
    assert "recover: checked 0 active tasks" in release.stdout
    # The release's recovery reached the test's own Redis (the broker epoch it starts), under this run's prefix only.
    keys = sorted(k.decode() for k in private_redis.client.keys("*"))
    assert f"{RUN_PREFIX}:broker:epoch" in keys
    assert all(k.startswith(f"{RUN_PREFIX}:") for k in keys), keys
    port = free_port()
    web = subprocess.Popen(
        [*honcho, "start", "--port", str(port), "web"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/admin/login/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert web.poll() is None, web.stdout.read().decode()
                assert time.monotonic() < deadline, "web did not answer within 60 s"
                time.sleep(0.25)
        assert status == 200 and b"Crux administration" in body
        css_status, _ = get(f"http://127.0.0.1:{port}/static/admin/css/base.css")
        assert css_status == 200
        api_status, api_body = get(f"http://127.0.0.1:{port}/api/")
        assert api_status == 200 and b"/api/schema/" in api_body
        schema_status, _ = get(f"http://127.0.0.1:{port}/api/schema/")
        assert schema_status == 200
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


def test_the_housekeeping_process_consumes_the_housekeeping_queue_and_make_run_starts_it(settings):
    lines = procfile()
    assert {"release", "web", "stream", "worker", "housekeeping", "beat"} <= set(lines)
    assert "-Q ${CELERY_HOUSEKEEPING_QUEUE:-" + settings.CELERY_HOUSEKEEPING_QUEUE + "}" in lines["housekeeping"]
    assert "-Q" not in lines["worker"], "the task worker consumes the default queue only"
    run_line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "honcho start --port" in line)
    assert run_line.split("honcho start --port $(PORT) ")[1].split() == [
        "web",
        "stream",
        "worker",
        "housekeeping",
        "beat",
    ]


def test_every_crux_job_but_task_execution_goes_to_the_housekeeping_queue(settings):
    from crux.celery import app, route_task
    from tasks.dispatch import EXECUTE_TASK

    assert route_task("myapp.send_email", (), {}, {}) is None, "another application's tasks keep the default queue"

    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert {EXECUTE_TASK, "crux.recovery_sweep", "crux.reconcile_mirror", "crux.backup", "crux.auto_purge"} <= names
    for name in names:
        queue = app.amqp.router.route({}, name)["queue"].name
        expected = app.conf.task_default_queue if name == EXECUTE_TASK else settings.CELERY_HOUSEKEEPING_QUEUE
        assert queue == expected, name
    for job in settings.CELERY_BEAT_SCHEDULE.values():
        assert job["task"] in names and job["task"] != EXECUTE_TASK
