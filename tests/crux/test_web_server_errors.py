"""Errors the web server answers before Django sees the request are JSON too (crux/gunicorn_conf.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """A real gunicorn with the project's configuration; no request here reaches the database or Redis."""
    running = Processes(Path(tmp_path_factory.mktemp("web")), "redis://127.0.0.1:1/0")
    running.start("web", ["gunicorn", "crux.wsgi", "-c", "python:crux.gunicorn_conf"])
    try:
        running.wait_for_web()
        yield running
    finally:
        running.stop()


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


HOST = b"Host: 127.0.0.1\r\n"
MALFORMED = {
    "request line beyond the limit": (b"GET /api/tasks?search=" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    "not HTTP": (b"HELLO\r\n\r\n", 400),
    "bad HTTP version": (b"GET /api/tasks HTTP/9.9\r\n" + HOST + b"\r\n", 400),
    "header beyond the limit": (b"GET /api/tasks HTTP/1.1\r\n" + HOST + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    "header without a colon": (b"GET /api/tasks HTTP/1.1\r\n" + HOST + b"broken header\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_request_the_server_cannot_parse_is_answered_in_json(web: Any, name: str) -> None:
    data, status = MALFORMED[name]
    code, headers, body = raw_request(web.port, data)
    assert code == status, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["detail"], body


def test_a_long_query_within_the_server_limit_reaches_the_api_and_is_refused_by_name(web: Any) -> None:
    """A 5,000-character search passes gunicorn (limit_request_line 8190) and the API names the parameter."""
    data = b"GET /api/tasks?search=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    code, headers, body = raw_request(web.port, data)
    assert headers["content-type"] == "application/json"
    assert code in (400, 401), body  # anonymous: 401 before the filters; either way JSON, never gunicorn's page
