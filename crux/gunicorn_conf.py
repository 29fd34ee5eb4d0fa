"""gunicorn settings of the web process (Procfile, ``make run``, ``bench.http``), from the environment.

Sync workers: each process serves one request at a time and takes the next
connection only when it is free, so the kernel hands every request to an idle
process. Threaded workers keep client connections open instead, and a process
that happens to hold most of them serves them alone (Python runs one thread of
a process at a time) while the others idle: BENCHMARKS.md measured submit
throughput halving in some runs. Without keep-alive, put a proxy (nginx) in
front for slow or remote clients; the default binding is 127.0.0.1.

Logs: the access log writes paths without query strings, and every line of the
error and access logs passes ``tasks.redaction.RedactingFilter``.

Metrics: the master reads Django's settings first, which put PROMETHEUS_MULTIPROC_DIR in the environment before
anything imports prometheus_client (it picks its multiprocess mode then), so every worker writes its counters to
that directory; ``child_exit`` takes a dead worker's live gauges out of the sums.
"""

import html
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from gunicorn.glogging import Logger
from gunicorn.workers.sync import SyncWorker

from crux.memory import freeze_start_up_objects
from tasks.redaction import RedactingFilter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
METRICS_DIR = str(settings.PROMETHEUS_MULTIPROC_DIR)

bind = f"{os.environ.get('WEB_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# gunicorn's control socket (for gunicornc), one per instance: its default is one path per user, so a second
# instance on the machine (another port, another checkout) took over the first one's. Named after the address.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or str(
    Path(__file__).resolve().parents[1] / "var" / "run" / f"gunicorn-{re.sub(r'[^A-Za-z0-9.]+', '-', bind)}.ctl"
)
workers = int(os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
worker_class = "crux.gunicorn_conf.JsonErrorSyncWorker"
# The longest request line gunicorn reads (its maximum): a long query reaches Django, which names the parameter.
limit_request_line = 8190
graceful_timeout = 20
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
# The request's path without its query string (%(U)s, not the request line %(r)s), and no Referer: a URL that
# carried a credential is never written to the access log.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(L)s'


class RedactingLogger(Logger):
    """gunicorn's error and access logs, each handler behind the redacting filter that Django's LOGGING uses."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                    handler.addFilter(RedactingFilter())


logger_class = RedactingLogger


class JsonErrorSocket:
    """The client socket while gunicorn writes an error of its own (a request it cannot parse, a request line or
    header beyond its limits): the same status, answered as JSON ``{"detail": ...}`` instead of an HTML page."""

    _PAGE_MESSAGE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.S)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        status_line = data.partition(b"\r\n")[0].decode("latin1")
        _, status, reason = status_line.split(" ", 2)
        found = self._PAGE_MESSAGE.search(data)
        message = html.unescape(found.group(1).decode("latin1")) if found and found.group(1) else ""
        body = json.dumps({"detail": f"{reason}: {message}" if message else f"{reason}."}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self._sock.sendall(head.encode("latin1") + body)


class JsonErrorSyncWorker(SyncWorker):
    """gunicorn's sync worker, whose own error answers are JSON like every other error of the API."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, cast(socket.socket, JsonErrorSocket(client)), addr, exc)


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook in a worker once it has loaded the application: its start-up objects frozen
    (``crux.memory``), so that no full collection pauses a request to walk them."""
    freeze_start_up_objects(urlconf=settings.ROOT_URLCONF)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook in the master when a worker process has exited (its counters stay: counts never go back)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)
