"""gunicorn settings of the web process (Procfile, ``make run``, ``bench.http``), from the environment.

Sync workers: each process serves one request at a time and takes the next
connection only when it is free, so the kernel hands every request to an idle
process. Threaded workers keep client connections open instead, and a process
that happens to hold most of them serves them alone (Python runs one thread of
a process at a time) while the others idle: BENCHMARKS.md measured submit
throughput halving in some runs. Without keep-alive, put a proxy (nginx) in
front for slow or remote clients; the default binding is 127.0.0.1.
"""

import os

bind = f"{os.environ.get('WEB_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
worker_class = "sync"
graceful_timeout = 20
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
