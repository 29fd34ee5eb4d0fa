"""SQLite whose write transactions queue on a kernel file lock instead of busy-sleeping.

With ``transaction_mode=IMMEDIATE`` every transaction takes SQLite's write lock
at BEGIN. When several processes want it at once, SQLite's busy handler makes
the losers sleep in growing steps (up to 100 ms) and poll again, which turns
contention into long tail latencies. Here a transaction first takes an
exclusive ``flock`` on ``<database>.writelock``: waiters block in the kernel
and the next one wakes as soon as the lock is released, in order of arrival.

The lock and the BEGIN wait for the transaction's first statement, so the
Python work that opens a transaction (validation, building the history row)
runs before it, not while every other writer waits. The lock is released at
commit or rollback (before on-commit callbacks run) and by the kernel if the
process dies. A write outside any transaction (an UPDATE in autocommit, which
commits on its own: a worker's lease renewal, say) holds the lock while it runs,
so it queues with the transactions instead of meeting their lock in SQLite's
busy handler.

Its operations read a UUID column's value back whether it holds the UUID's 16 bytes
(``tasks.models.CompactUUIDField``) or Django's 32 hex digits, and a time whether it holds
microseconds since the Unix epoch in UTC (``tasks.models.CompactDateTimeField``) or Django's
text; Django's date functions in SQL (``Trunc``, ``__date``, ``.dates()``, a difference of two
times) take both forms too. JSON is written without spaces after its separators.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

from django.db.backends.sqlite3 import _functions, base, operations  # type: ignore[attr-defined]  # unstubbed
from django.utils.dateparse import parse_datetime

_NAIVE_EPOCH = datetime(1970, 1, 1)


def naive_utc(microseconds: int) -> datetime:
    """The naive UTC time ``microseconds`` after the Unix epoch: what Django reads a time's text as."""
    return _NAIVE_EPOCH + timedelta(0, 0, microseconds)  # positional: half the cost of the keyword


def _read_time(raw: bytes) -> datetime | None:
    """The driver's converter of columns declared ``datetime`` or ``timestamp``: an integer (the digits SQLite
    hands a converter) is microseconds since the epoch; Django's text has its year's dash at index 4."""
    if raw[4:5] != b"-":
        try:
            return naive_utc(int(raw))
        except ValueError:  # neither form: as Django reads it
            pass
    return parse_datetime(raw.decode())


# Converters are the driver's, for every connection of the process: Django registers its own at import.
sqlite3.register_converter("datetime", _read_time)
sqlite3.register_converter("timestamp", _read_time)


def _time_as_text(value: Any) -> Any:
    """An integer time as the text Django's SQL functions parse; anything else as it is."""
    return str(naive_utc(value)) if type(value) is int else value


def _taking_integer_times(function: Callable[..., Any], *positions: int) -> Callable[..., Any]:
    """``function`` with its arguments at ``positions`` (the times) read from an integer too."""

    def wrapped(*args: Any) -> Any:
        converted = list(args)
        for position in positions:
            converted[position] = _time_as_text(converted[position])
        return function(*converted)

    return wrapped


# Django's SQL functions whose arguments at these positions are always times (the others take text, durations or
# time-of-day values): name -> (number of arguments, Django's function, positions).
_TIME_FUNCTIONS: dict[str, tuple[int, Callable[..., Any], tuple[int, ...]]] = {
    "django_date_extract": (2, _functions._sqlite_datetime_extract, (1,)),
    "django_date_trunc": (4, _functions._sqlite_date_trunc, (1,)),
    "django_datetime_cast_date": (3, _functions._sqlite_datetime_cast_date, (0,)),
    "django_datetime_cast_time": (3, _functions._sqlite_datetime_cast_time, (0,)),
    "django_datetime_extract": (4, _functions._sqlite_datetime_extract, (1,)),
    "django_datetime_trunc": (4, _functions._sqlite_datetime_trunc, (1,)),
    "django_timestamp_diff": (2, _functions._sqlite_timestamp_diff, (0, 1)),
}


# Truncations that are a whole number of microseconds of UTC (a day is, in UTC, but not in a zone with its own days).
_UNIT_MICROSECONDS = {"second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000}

_COMPACT_SEPARATORS = (",", ":")
_COMPACT_JSON = json.JSONEncoder(separators=_COMPACT_SEPARATORS)


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_json_value(self, value: Any, encoder: type[json.JSONEncoder] | None) -> str:
        """A JSON field's text without the space Django's ``json.dumps`` writes after each ``,`` and ``:``: a byte
        less per item and key of every stored JSON value (SQLite keeps the text as given; it reads both forms)."""
        if encoder is None:
            return _COMPACT_JSON.encode(value)  # one encoder for all: 1.1 µs a small value, json.dumps's 1.3
        return json.dumps(value, cls=encoder, separators=_COMPACT_SEPARATORS)

    def datetime_trunc_sql(  # type: ignore[override]  # django-stubs: Django before 4.2 returned the SQL alone
        self, lookup_type: str, sql: str, params: Sequence[Any], tzname: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        """Django's, but an integer time (microseconds of UTC) truncated to its second, minute or hour of UTC by
        arithmetic in SQL, where Django calls a Python function for each row (25 µs: 1.4 s for a day's chart at a
        million tasks). Text, a time before 1970 and any other zone or unit go to Django's function."""
        trunc_sql, trunc_params = super().datetime_trunc_sql(lookup_type, sql, params, tzname)  # type: ignore[str-unpack]
        unit = _UNIT_MICROSECONDS.get(lookup_type.lower())
        if unit is None or self.connection.timezone_name != "UTC" or tzname not in (None, "UTC"):
            return trunc_sql, tuple(trunc_params)
        arithmetic = f"CASE WHEN typeof({sql}) = 'integer' AND ({sql}) >= 0 THEN ({sql}) - ({sql}) %% {unit}"
        return f"{arithmetic} ELSE {trunc_sql} END", (*params, *params, *params, *params, *trunc_params)

    def convert_uuidfield_value(self, value: Any, expression: Any, connection: Any) -> uuid.UUID | None:
        if isinstance(value, bytes):
            return uuid.UUID(bytes=value)
        return super().convert_uuidfield_value(value, expression, connection)

    def convert_datetimefield_value(self, value: Any, expression: Any, connection: Any) -> datetime | None:
        """As Django's, and an integer (an aggregate's or an expression's result, which no converter of the
        driver saw) as microseconds since the epoch. A naive time (what the driver's converter read) takes the
        connection's zone directly, as Django's ``make_aware`` would after checks that cost twice the rest (every
        time of every row a list reads)."""
        if type(value) is int:
            value = naive_utc(value)
        if type(value) is datetime and value.tzinfo is None:
            zone = self.connection.timezone  # None without USE_TZ
            return value if zone is None else value.replace(tzinfo=zone)
        return super().convert_datetimefield_value(value, expression, connection)


@lru_cache(maxsize=1024)
def _reads_only(query: str) -> bool:
    """Whether a statement only reads (a SELECT, an EXPLAIN, a PRAGMA): it needs no write lock of its own."""
    return query.lstrip()[:7].upper().startswith(("SELECT", "EXPLAIN", "PRAGMA"))


@lru_cache(maxsize=1024)
def _qmark_style(query: str) -> str:
    """A statement's ``%s`` placeholders as SQLite's ``?``, as Django's cursor converts them, kept per statement:
    Django runs its regular expression over every statement it sends (the same few dozen, over and over)."""
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    _lock_fd: int | None = None
    _lock_held = False
    _begin_pending = False

    def _lock_path(self) -> str:
        return f"{self.settings_dict['NAME']}.writelock"

    def _acquire_write_lock(self) -> None:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_held = True

    def _release_write_lock(self) -> None:
        self._begin_pending = False
        if self._lock_held:
            assert self._lock_fd is not None  # held only once _acquire_write_lock opened it
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._lock_held = False

    def _start_transaction_under_autocommit(self) -> None:
        if self.is_in_memory_db():
            return super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private in Django, unstubbed
        self._begin_pending = True

    def begin_if_pending(self) -> None:
        """Take the write lock and BEGIN, if an atomic block opened and has run no statement yet."""
        if not self._begin_pending:
            return
        self._begin_pending = False
        self._acquire_write_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private in Django, unstubbed
        except BaseException:
            self._release_write_lock()
            raise

    def lock_for_write_alone(self, query: str) -> bool:
        """Take the write lock for ``query`` if it writes outside any transaction (it commits on its own, when it
        has run); True if taken, for the caller to release once the statement has run."""
        if self._lock_held or not self.autocommit or self.in_atomic_block or _reads_only(query):
            return False
        if self.is_in_memory_db():  # no file, no lock file: one connection, nothing to queue with
            return False
        self._acquire_write_lock()
        return True

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        for name, (arguments, function, positions) in _TIME_FUNCTIONS.items():
            connection.create_function(name, arguments, _taking_integer_times(function, *positions), deterministic=True)
        return connection

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=self._cursor_class)

    @cached_property
    def _cursor_class(self) -> type[base.SQLiteCursorWrapper]:
        """Cursors that begin this connection's pending transaction before their first statement, and hold the
        write lock for a write made outside any transaction."""
        wrapper = self

        class Cursor(base.SQLiteCursorWrapper):
            def execute(self, query: str, params: Any = None) -> Any:
                return self._statement(super().execute, query, params)

            def executemany(self, query: str, param_list: Any) -> Any:
                return self._statement(super().executemany, query, param_list)

            def _statement(self, run: Callable[[str, Any], Any], query: str, arguments: Any) -> Any:
                wrapper.begin_if_pending()
                if not wrapper.lock_for_write_alone(query):
                    return run(query, arguments)
                try:
                    return run(query, arguments)
                finally:
                    wrapper._release_write_lock()

            def convert_query(self, query: str, *, param_names: Any = None) -> str:
                if param_names is None:
                    return _qmark_style(query)
                return super().convert_query(query, param_names=param_names)

        return Cursor

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]  # private in Django, unstubbed
        finally:
            self._release_write_lock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]  # private in Django, unstubbed
        finally:
            self._release_write_lock()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]  # private in Django, unstubbed
        finally:
            self._release_write_lock()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
