"""The Procfile's release and web lines really set up and serve the admin and the API."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_release_then_web_serve_admin_login_and_api(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.sqlite3'}",
        "WEB_CONCURRENCY": "1",
    }
    honcho = [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
    release = subprocess.run([*honcho, "start", "release"], env=env, capture_output=True, text=True, timeout=180)
    assert release.returncode == 0, release.stdout + release.stderr
    assert "recover: checked 0 active tasks" in release.stdout
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
