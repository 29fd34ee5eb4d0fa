"""PostgreSQL as Django's backend, reading times with psycopg's compiled loader.

Django reads every ``timestamptz`` through a Python subclass of psycopg's pure-Python
loader (``psycopg_any.BaseTzLoader``), so that each value comes back in the zone
Django expects: 3.5 µs a time, fetch included, where psycopg's compiled loader
(``psycopg[binary]``) takes 0.4. A task row holds up to nine times; a page of 50 tasks
reads about 250 of them.

When Django's zone for the connection is UTC (USE_TZ without a ``TIME_ZONE`` of the
database's own: Crux's settings), Django sets the session's zone to UTC, and psycopg's
own loader then returns exactly what Django's would: the instant, with
``datetime.timezone.utc`` as its ``tzinfo``. Each connection then reads times with
``_UtcTimesLoader``, a Python loader as Django's is, that calls psycopg's. Any other
zone keeps Django's loader.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.backends.postgresql import base
from psycopg import adapters
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.postgres import types
from psycopg.pq import Format

TIMESTAMPTZ_OID = types["timestamptz"].oid
# psycopg's own loader: its C implementation where psycopg has one (psycopg[binary]), which cannot be subclassed.
_PSYCOPG_LOADER = adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)


class _UtcTimesLoader(Loader):
    """Times as psycopg's own loader reads them, in the session's zone (UTC).

    ``timezone`` is what Django checks a connection's loader for before each cursor: UTC, so it registers no loader
    of its own on the cursor."""

    timezone = UTC

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        assert _PSYCOPG_LOADER is not None  # psycopg registers it at import
        self._psycopg = _PSYCOPG_LOADER(oid, context)

    def load(self, data: Buffer) -> datetime:
        return self._psycopg.load(data)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if self.timezone is UTC:
            connection.adapters.register_loader(TIMESTAMPTZ_OID, _UtcTimesLoader)
        return connection
