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
    15 ms through a b-tree). One owner's list (every list of a user who is not staff) matches its terms past the
    trigram indexes (``terms_past_trigram_indexes``) with plain index scans off, so it reads the window through a
    bitmap of the owner's index: that owner's tasks of the window alone, in the order of their pages (at a million
    tasks, an owner of a fifth of them: 2.0-3.1 ms against 3.7-4.8 through the ``created_at`` index, which the
    planner prefers as it cannot see that the owner's newest tasks lie in the newest pages). Every owner's list
    turns bitmap scans off: the ``created_at`` index's window, filtered. Other lists have no trigram index to
    AND in: their count is one statement, not four. ``SET LOCAL`` ends with the transaction it opens; inside a
    caller's transaction, where it would outlive the count, the setting read before is restored after it (a
    failure rolls the savepoint back, and the setting with it).
    """
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or not searches_text(queryset):
        return queryset.order_by()[:most].count()
    if _of_one_owner(queryset):
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


def _of_one_owner(queryset: TaskQuerySet) -> bool:
    """Whether ``queryset``'s condition keeps one owner's tasks (``owner = value`` among its top-level ANDs)."""
    where = queryset.query.where
    return (
        where.connector == AND
        and not where.negated
        and any(
            isinstance(child, Exact) and isinstance(child.lhs, Col) and child.lhs.target.name == "owner"
            for child in where.children
        )
    )


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
