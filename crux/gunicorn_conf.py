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
"""

import os
from typing import Any

from gunicorn.glogging import Logger

from tasks.redaction import RedactingFilter

bind = f"{os.environ.get('WEB_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
worker_class = "sync"
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
