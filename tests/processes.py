"""Real processes for end-to-end tests: a gunicorn web server and Celery workers on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import RUN_PREFIX, child_database_url, free_port

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """A gunicorn web server and a Celery worker on the test database and a private Redis, logging to files."""

    def __init__(self, tmp_path: Path, redis_url: str):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crux.settings",
            "DATABASE_URL": child_database_url(),
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "REDIS_KEY_PREFIX": RUN_PREFIX,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "WEB_ACCESS_LOG": "-",
            "TASK_HANDLERS_EXTRA": "leak=tests.handlers.leak_secrets",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        with open(self.tmp_path / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def wait_for_web(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/", timeout=5).close()
                return
            except (urllib.error.URLError, ConnectionError):
                assert self.processes["web"].poll() is None, self.log("web")
                assert time.monotonic() < deadline, "web did not answer within 60 s"
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (their logs are flushed), then make sure they are gone."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
