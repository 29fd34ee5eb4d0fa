"""Real processes for end-to-end tests: gunicorn web servers and Celery workers on the test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


class WebServer:
    """One gunicorn of the project's configuration (two worker processes) on a port of its own, beside others."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port, self.log = free_port(), log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "crux.wsgi", "-c", "python:crux.gunicorn_conf"],
                cwd=ROOT,
                env={**env, "PORT": str(self.port), "WEB_CONCURRENCY": "2", "WEB_ACCESS_LOG": ""},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # gunicorn's control socket, named after the address (crux/gunicorn_conf.py)
        self.control_socket = ROOT / "var" / "run" / f"gunicorn-127.0.0.1-{self.port}.ctl"

    def request(self, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health/live", timeout=5).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text(errors="replace")
                assert time.monotonic() < deadline, "web did not answer within 60 s"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
