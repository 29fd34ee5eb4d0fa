"""A page of a task list and a count of its matches whose cost does not grow with the table.

The page itself is cheap at any size: lists are read newest first through
indexes in that order, and the query stops at the page's end. Counting every
match is what grows: a filter that matches 1 % of a million tasks has the count
read a hundred thousand rows to reach its cap. So matches are counted only among
the table's ``window`` newest tasks (by ``created_at``, whoever owns them and
whatever the list's order); beyond that window the count is a lower bound. A page
that is not full needs no count at all: its matches end on it, so the count is
exact whatever the table's size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.models import F
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, GreaterThan, GreaterThanOrEqual
from django.db.models.sql.where import AND

from tasks.models import Task, TaskQuerySet
from tasks.selectors.search import reads_newest_first, searches_text, terms_past_trigram_indexes


@dataclass(frozen=True)
class TaskPage:
    """The tasks of one page, and how many match: exactly when ``exact``, else at least ``count``."""

    tasks: list[Task]
    count: int
    exact: bool


# The task's relations to a user that a page names, each read as that user's name in a join column.
USER_RELATIONS = ("owner", "deleted_by")


def username_column(relation: str) -> str:
    """The column of a page's tasks that holds the username of their ``relation`` (``USER_RELATIONS``)."""
    return f"{relation}_username"


def newest_window_start(using: str, window: int) -> datetime | None:
    """The ``created_at`` of the table's ``window + 1``-th newest task, or None when the table holds no more:
    the tasks created after it are at most ``window`` (ties with it fall outside), read from the ``created_at``
    index alone.

    Kept per process (``_WindowStart``) while the table's newest task is the same one, for at most
    ``WINDOW_START_MAX_AGE`` seconds: reading it walks ``window + 1`` index entries (0.8 ms at a million tasks on
    PostgreSQL, 0.2 on SQLite, two to three times that inside a request), the newest task one. Only a removal
    (a purge) or a task created in the past (an unarchive) moves the start without a new newest task: until the
    start is read again, the count's window then holds fewer or more tasks than ``window``, and a count that
    read the window is still a lower bound, never taken for exact (``task_page``)."""
    newest = _newest_task(using)
    key = (using, window)
    kept = _WINDOW_STARTS.get(key)
    now = time.monotonic()
    if kept is not None and kept.newest == newest and now - kept.read_at < WINDOW_START_MAX_AGE:
        return kept.start
    starts = Task.objects.using(using).order_by("-created_at").values_list("created_at", flat=True)
    start = starts[window : window + 1].first()
    _WINDOW_STARTS[key] = _WindowStart(newest, start, now)
    return start


WINDOW_START_MAX_AGE = 60.0


class _WindowStart(NamedTuple):
    newest: tuple[Any, ...] | None  # the newest task's (created_at, id) as the driver gives them, when read
    start: datetime | None
    read_at: float  # time.monotonic()


# The window's start by database and window, as last read in this process.
_WINDOW_STARTS: dict[tuple[str, int], _WindowStart] = {}


def _newest_task(using: str) -> tuple[Any, ...] | None:
    """The (created_at, id) of the table's newest task, as the driver gives them (a key, never shown): one entry
    of the ``created_at`` index and its row, in raw SQL (the ORM's compilation cost more than the read)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(Task._meta.db_table)
    columns = {field.name: field.column for field in Task._meta.concrete_fields if field.column}
    created, pk = quote(columns["created_at"]), quote(columns["id"])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {created}, {pk} FROM {table} ORDER BY {created} DESC LIMIT 1")
        row = cursor.fetchone()
    return None if row is None else tuple(row)


def task_page(queryset: TaskQuerySet, *, offset: int, limit: int, cap: int, window: int) -> TaskPage:
    """Tasks ``offset`` to ``offset + limit`` of ``queryset`` in its order, and how many match.

    The tasks carry their users' names (``username_column``), not user instances: making one for each task took
    about a quarter of the time to read a page (3.1 against 2.3 ms for 50 tasks on SQLite).

    The count is exact when the page is the last one (not full), or when the table holds at most ``window``
    tasks and the matches are at most ``cap``; otherwise it is a lower bound: what the newest ``window`` tasks
    hold (at most ``cap``), never less than the tasks up to the page's end and the one after it. A list read
    newest first whose row after the page is older than the window needs no count: every match the window holds
    was read, fewer than that bound. (A search for three words at a million tasks on PostgreSQL: its count reads
    the owner's 2,000 of the window's 10,000 rows, 2-3 ms.)
    """
    usernames = {username_column(relation): F(f"{relation}__username") for relation in USER_RELATIONS}
    rows = list(queryset.annotate(**usernames)[offset : offset + limit + 1])
    has_next = len(rows) > limit
    tasks = rows[:limit]
    if not has_next and (tasks or offset == 0):
        return TaskPage(tasks, offset + len(tasks), exact=True)
    start = newest_window_start(queryset.db, window)
    if start is None:
        matches = queryset.order_by()[: cap + 1].count()
    elif has_next and reads_newest_first(queryset.query) and rows[-1].created_at <= start:
        # Read newest first past the window's start: the window's matches are all among the rows before the one
        # after the page, fewer than the lower bound below, so counting them would change nothing.
        matches = 0
    else:
        matches = _count_up_to(_created_after(queryset, start), cap + 1)
    exact = start is None and matches <= cap
    count = min(matches, cap)
    if has_next:
        count = max(count, offset + limit + 1)
    return TaskPage(tasks, count, exact=exact)


def _count_up_to(queryset: TaskQuerySet, most: int) -> int:
    """How many rows ``queryset`` (narrowed to the window) has, counting at most ``most``.

    On PostgreSQL a search's count is planned for its window, never through a trigram index: the planner would
    AND in the index of a common search word, whose cost it underestimates (0.1 s for 'login' at 1M tasks, against
    15 ms through a b-tree). The list of an owner of few tasks (``FEW_TASKS_SHARE`` by ``owner_share``: a user
    who is not staff, beside others) matches its terms past the trigram indexes (``terms_past_trigram_indexes``)
    with plain index scans off, so it reads the window through a bitmap of the owner's index: that owner's tasks of
    the window alone, in the order of their pages. The planner would walk the ``created_at`` index instead, every
    owner's rows: it cannot see that the owner's newest tasks lie in the newest pages. Every other list turns
    bitmap scans off and walks the ``created_at`` index's window: a bitmap of a window that is mostly the owner's
    reads as many rows, and more slowly. Lists without search terms have no trigram index to AND in: their count
    is one statement, not four. ``SET LOCAL`` ends with the transaction it opens; inside a caller's transaction,
    where it would outlive the count, the setting read before is restored after it (a failure rolls the savepoint
    back, and the setting with it).
    """
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or not searches_text(queryset):
        return queryset.order_by()[:most].count()
    owner = _owner_of(queryset)
    share = None if owner is None else owner_share(queryset.db, owner)
    if share is not None and share <= FEW_TASKS_SHARE:
        queryset, scans = terms_past_trigram_indexes(queryset), "enable_indexscan"
    else:
        scans = "enable_bitmapscan"
    outer = connection.in_atomic_block
    with transaction.atomic(using=queryset.db), connection.cursor() as cursor:
        if outer:
            cursor.execute("SELECT current_setting(%s)", [scans])
            (setting,) = cursor.fetchone()
        cursor.execute(f"SET LOCAL {scans} = off")
        matches = queryset.order_by()[:most].count()
        if outer:
            cursor.execute("SELECT set_config(%s, %s, true)", [scans, setting])
    return matches


# The most of the tasks an owner may hold for a search's count to read the window through the owner's index. At a
# million tasks, the count of three words ('login'), through the owner's index against the created_at walk: an
# owner of a fifth 2.3-2.6 ms against 4.2-4.9 (2.0-2.3 against 3.7-4.1); of half 6.9-7.9 against 10.2-11.1 (4.9-9.2
# against 3.0-3.3); of all 13.8-15.8 against 11.1-12.8 (4.2-4.9 against 3.2-3.5). The last two on copies whose
# rows an UPDATE gave to the owner, which also scattered them over the table's pages.
FEW_TASKS_SHARE = 0.25


def _owner_of(queryset: TaskQuerySet) -> Any | None:
    """The owner whose tasks alone ``queryset``'s condition keeps (``owner = value`` among its top-level ANDs), or
    None."""
    where = queryset.query.where
    if where.connector != AND or where.negated:
        return None
    for child in where.children:
        if isinstance(child, Exact) and isinstance(child.lhs, Col) and child.lhs.target.name == "owner":
            return child.rhs
    return None


def owner_share(using: str, owner: Any) -> float | None:
    """The share of the tasks ``owner`` (a user's primary key, of any type) holds by PostgreSQL's statistics of the
    table (``pg_stats``, as the last ANALYZE left them), as the planner reckons it: a most common owner's own share,
    any other an even part of what those leave; None before the table has statistics. Read once per
    ``OWNER_SHARES_MAX_AGE`` seconds in a process."""
    now = time.monotonic()
    kept = _OWNER_SHARES.get(using)
    if kept is None or now - kept.read_at >= OWNER_SHARES_MAX_AGE:
        kept = _OWNER_SHARES[using] = _read_owner_shares(using, now)
    if kept.common is None:
        return None
    return kept.common.get(str(owner), kept.other)


def _read_owner_shares(using: str, now: float) -> _OwnerShares:
    """The owners' shares by the statistics of the task table's owner column (``owner_share``), read ``now``."""
    table = Task._meta.db_table
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::text[], most_common_freqs, null_frac, n_distinct,"
            " (SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)) FROM pg_stats"
            " WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            [table, table, Task._meta.get_field("owner").column],
        )
        row = cursor.fetchone()
    if row is None:
        return _OwnerShares(None, 0.0, now)
    owners, shares, null_share, distinct, tasks = row
    common = dict(zip(owners or (), shares or (), strict=True))
    if distinct < 0:  # a share of the rows: the owners grow with the tasks
        distinct = -distinct * tasks
    others = distinct - len(common)
    left = max(0.0, 1.0 - sum(common.values()) - null_share)
    return _OwnerShares(common, left / others if others >= 1 else 0.0, now)


OWNER_SHARES_MAX_AGE = 300.0


class _OwnerShares(NamedTuple):
    common: dict[str, float] | None  # the most common owners' shares by their ids as text; None: no statistics yet
    other: float  # the share of any other owner
    read_at: float  # time.monotonic()


# The owners' shares by database, as last read in this process.
_OWNER_SHARES: dict[str, _OwnerShares] = {}


def _created_after(queryset: TaskQuerySet, start: datetime) -> TaskQuerySet:
    """``queryset`` narrowed to tasks created after ``start``, in place of the lower bounds on ``created_at`` it
    has (``date_from``) when they are older: with two lower bounds on the column, SQLite's planner takes the
    owner's index and reads every task of the range instead of the filters' index and the window."""
    narrowed = queryset.filter(created_at__gt=start)
    where = narrowed.query.where
    if where.connector == AND and not where.negated:
        where.children = [child for child in where.children[:-1] if not _older_lower_bound(child, start)] + [
            where.children[-1]
        ]
    return narrowed


def _older_lower_bound(condition: object, start: datetime) -> bool:
    """Whether ``condition`` is ``created_at >= value`` or ``created_at > value`` with a value before ``start``."""
    return (
        isinstance(condition, GreaterThan | GreaterThanOrEqual)
        and isinstance(condition.lhs, Col)
        and condition.lhs.target.name == "created_at"
        and isinstance(condition.rhs, datetime)
        and condition.rhs < start
    )
