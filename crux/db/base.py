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
process dies.

Its operations read a UUID column's value back whether it holds the UUID's 16 bytes
(``tasks.models.CompactUUIDField``) or Django's 32 hex digits.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from functools import cached_property
from typing import Any

from django.db.backends.sqlite3 import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def convert_uuidfield_value(self, value: Any, expression: Any, connection: Any) -> uuid.UUID | None:
        if isinstance(value, bytes):
            return uuid.UUID(bytes=value)
        return super().convert_uuidfield_value(value, expression, connection)


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

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=self._cursor_class)

    @cached_property
    def _cursor_class(self) -> type[base.SQLiteCursorWrapper]:
        """Cursors that begin this connection's pending transaction before their first statement."""
        begin = self.begin_if_pending

        class Cursor(base.SQLiteCursorWrapper):
            def execute(self, query: str, params: Any = None) -> Any:
                begin()
                return super().execute(query, params)

            def executemany(self, query: str, param_list: Any) -> Any:
                begin()
                return super().executemany(query, param_list)

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
