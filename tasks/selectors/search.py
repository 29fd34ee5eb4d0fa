"""Text search over tasks: every word in the title or the description, through an index where the engine has one.

PostgreSQL: pg_trgm GIN indexes on the very expressions ``icontains`` compiles
to. SQLite: an FTS5 trigram table (``tasks.db_triggers.SEARCH_TABLE``) narrows
the rows to candidates first. The condition itself is always the same
``icontains`` per word, so results never depend on the index being exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from operator import and_
from typing import Any

from django.db import connections
from django.db.models import BooleanField, Expression, Q

from tasks.db_triggers import SEARCH_TABLE
from tasks.models import TaskQuerySet

# SQLite: at most this many candidate rows are taken from the trigram index.
# Words found in more rows than that are common enough for the plain scan in list order to fill a page
# (and the capped count) sooner than reading every candidate would.
SEARCH_CANDIDATE_LIMIT = 20_000
# SQLite, beyond this many rows: the share of rows the index holds candidates in is first measured on the newest
# this many (a rowid range of the index, so its cost does not grow with the table).
SEARCH_SAMPLE_ROWS = 10_000
# The page the choice between the index and the plain scan is made for (API_PAGE_SIZE's default).
SEARCH_PAGE_ROWS = 50


def search_tasks(queryset: TaskQuerySet, terms: list[str]) -> TaskQuerySet:
    """Tasks whose title or description holds every term, case-insensitively (``icontains``).

    The condition is always the same ``icontains`` per term. On PostgreSQL it uses the pg_trgm indexes
    as it stands; on SQLite the trigram FTS table first narrows it to candidate rows (a superset of the
    matches), unless the terms are too common for that to pay (``_scan_pays``, SEARCH_CANDIDATE_LIMIT).
    """
    if not terms:
        return queryset
    connection = connections[queryset.db]
    if connection.vendor == "sqlite":
        candidates = _sqlite_candidates(connection, terms)
        if candidates == "[]":
            return queryset.none()
        if candidates is not None:
            queryset = queryset.filter(_RowIdIn(candidates))
    return queryset.filter(reduce(and_, (Q(title__icontains=t) | Q(description__icontains=t) for t in terms)))


def _trigram_query(terms: list[str]) -> str | None:
    """An FTS5 query for the rows holding the first and the last trigram of every term of 3+ characters
    (None: no such term).

    Every row ``icontains`` matches holds them: the trigram tokenizer folds case as ``LIKE`` does (and
    more, beyond ASCII). More trigrams per word would narrow the candidates little (a word's trigrams go
    together) and cost a doclist each. Quoted, so that no character is FTS5 syntax."""
    trigrams: dict[str, None] = {}
    for term in terms:
        if len(term) >= 3:
            trigrams.update(dict.fromkeys((term[:3], term[-3:])))
    if not trigrams:
        return None
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in trigrams)


def _scan_pays(candidates: int, rows: int, table: int) -> bool:
    """Whether the plain scan in list order fills a page sooner than the index's candidates are read.

    With a share ``s = candidates / rows`` of the table's rows holding the trigrams, the scan reads about
    SEARCH_PAGE_ROWS / s rows for a page, the index about s x table candidates (and longer trigram lists
    still): the scan pays when s² x table > SEARCH_PAGE_ROWS. Common words on a large table scan; the same
    words on a small one, and rare ones anywhere, go through the index."""
    return candidates * candidates * table > SEARCH_PAGE_ROWS * rows * rows


def _sqlite_candidates(connection: Any, terms: list[str]) -> str | None:
    """The rowids (a JSON array) of the rows holding every term's trigrams, or None: no term of 3+
    characters, more than SEARCH_CANDIDATE_LIMIT such rows, or so many that the plain scan pays (``_scan_pays``,
    measured on the newest SEARCH_SAMPLE_ROWS rows of a larger table, before reading every candidate)."""
    query = _trigram_query(terms)
    if query is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT MAX(rowid) FROM tasks_task")
        table = cursor.fetchone()[0] or 0
        if table > SEARCH_SAMPLE_ROWS:
            cursor.execute(
                f"SELECT COUNT(*) FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH %s AND rowid > %s",
                [query, table - SEARCH_SAMPLE_ROWS],
            )
            if _scan_pays(cursor.fetchone()[0], SEARCH_SAMPLE_ROWS, table):
                return None
        cursor.execute(
            f"SELECT COUNT(*), json_group_array(rowid) FROM (SELECT rowid FROM {SEARCH_TABLE} "
            f"WHERE {SEARCH_TABLE} MATCH %s LIMIT %s)",
            [query, SEARCH_CANDIDATE_LIMIT + 1],
        )
        count, rowids = cursor.fetchone()
    if count > SEARCH_CANDIDATE_LIMIT or (table <= SEARCH_SAMPLE_ROWS and _scan_pays(count, table, table)):
        return None
    return rowids


class _RowIdIn(Expression):
    """SQLite: the task's implicit rowid is in a JSON array (the search index's candidates)."""

    output_field = BooleanField()

    def __init__(self, rowids: str, alias: str | None = None) -> None:
        super().__init__()
        self.rowids, self.alias = rowids, alias

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> _RowIdIn:
        resolved = self.copy()
        resolved.alias = query.get_initial_alias()
        return resolved

    def relabeled_clone(self, change_map: Mapping[str, str]) -> _RowIdIn:
        clone = self.copy()
        if self.alias is not None:
            clone.alias = change_map.get(self.alias, self.alias)
        return clone

    def get_group_by_cols(self) -> list:
        return []

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[str, ...]]:
        table = compiler.quote_name_unless_alias(self.alias)
        return f"{table}.rowid IN (SELECT value FROM json_each(%s))", (self.rowids,)
