"""The test run's environment, set before Django's settings are read (a plugin loaded first: ``-p
tests.environment`` in pyproject.toml, ahead of pytest-django, which reads the settings before any conftest).

Redis database 15, unless the shell names a ``REDIS_URL``: the suite never touches the default database (0) that a
developer's ``make run`` uses, the broker's own keys (kombu's bindings) included. Every process a test starts
inherits it.

A Redis key prefix of this run's own (``REDIS_KEY_PREFIX``), even if the shell names one, set here rather than in a
conftest: the settings read it once (the caches' ``KEY_PREFIX``), and a request made while tests are collected (the
API schema's, for schemathesis) already counts against a throttle under it. Every key the suite writes, in this
process and in every process a test starts, is under it, never under the default ``crux`` of another run or of a
developer's ``make run``.

prometheus-client's multiprocess files go to a directory of this run's own (removed at its end), never the
``var/prometheus`` of a developer's ``make run``; every process a test starts inherits it too.
"""

import atexit
import os
import shutil
import tempfile
import uuid

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ["REDIS_KEY_PREFIX"] = f"crux-test-{uuid.uuid4().hex[:8]}"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="crux-test-metrics-")
atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
