"""The broker side of Celery: kombu's Redis transport with one publishing client per pool, and retry loops that end.

Kombu's Redis channel builds a new ``redis.Redis`` client for every message it
publishes, which copies about 170 response callbacks into a fresh dict each
time: some 3 % of an API submit. A client holds no connection of its own (each
command borrows one from the pool), so one per pool serves every publish; a new
pool (after a reconnect) gets a new client. Settings select this transport for
``redis://`` and ``rediss://`` broker URLs (``CELERY_BROKER_TRANSPORT``).

Kombu's ``Connection.ensure`` retries forever when its caller passes no limit,
as control broadcasts (``revoke``, ``ping``) do: a broker that stops answering
would hold the web request that cancels a task. The connections of the Celery
app (``crux.celery``, through :class:`AMQP`) take that limit from the transport
option ``max_retries``, which kombu already applies to connecting.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from celery.app import amqp
from kombu import connection
from kombu.transport import redis

_T = TypeVar("_T")


class Channel(redis.Channel):
    _publish_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self._publish_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._publish_client = self._create_client()  # type: ignore[attr-defined]  # private in kombu
        yield cached


class Transport(redis.Transport):
    Channel = Channel


class Connection(connection.Connection):
    """A broker connection whose ``ensure`` gives up after ``max_retries`` (transport option) when given no limit."""

    def ensure(
        self,
        obj: Any,
        fun: Callable[..., _T],
        errback: Callable[[Exception, float], None] | None = None,
        max_retries: int | None = None,
        *args: Any,
        **options: Any,
    ) -> Callable[..., _T]:
        if max_retries is None:
            max_retries = (self.transport_options or {}).get("max_retries")
        return super().ensure(obj, fun, errback, max_retries, *args, **options)

    def Pool(self, limit: int | None = None, **kwargs: Any) -> connection.ConnectionPool:
        """Celery publishes through pooled connections: they must be bounded too."""
        return _ConnectionPool(self, limit=limit, **kwargs)


class _PooledConnection(connection.PooledConnection, Connection):  # type: ignore[misc]  # stubs: __enter__ Self types
    """A connection lent by the pool below: kombu's pooled connection, with the bounded ``ensure``."""


class _ConnectionPool(connection.ConnectionPool):
    def new(self) -> _PooledConnection:
        return _PooledConnection(self, **dict(self.connection._info(resolve=False)))


class AMQP(amqp.AMQP):
    """Celery's AMQP API with bounded connections (``Celery(amqp="crux.broker:AMQP")``)."""

    Connection = Connection
