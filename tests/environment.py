"""The test run's environment, set before Django's settings are read (a plugin loaded first: ``-p
tests.environment`` in pyproject.toml, ahead of pytest-django, which reads the settings before any conftest).

Redis database 15, unless the shell names a ``REDIS_URL``: the suite never touches the default database (0) that a
developer's ``make run`` uses, the broker's own keys (kombu's bindings) included. Every process a test starts
inherits it.
"""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
