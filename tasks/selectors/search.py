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


def search_tasks(queryset: TaskQuerySet, terms: list[str]) -> TaskQuerySet:
    """Tasks whose title or description holds every term, case-insensitively (``icontains``).

    The condition is always the same ``icontains`` per term. On PostgreSQL it uses the pg_trgm indexes
    as it stands; on SQLite the trigram FTS table first narrows it to candidate rows (a superset of the
    matches), unless the terms are too common for that to pay (SEARCH_CANDIDATE_LIMIT).
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


def _sqlite_candidates(connection: Any, terms: list[str]) -> str | None:
    """The rowids (a JSON array) of the rows holding every term's trigrams, or None: no term of 3+
    characters, or more than SEARCH_CANDIDATE_LIMIT such rows."""
    query = _trigram_query(terms)
    if query is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), json_group_array(rowid) FROM (SELECT rowid FROM {SEARCH_TABLE} "
            f"WHERE {SEARCH_TABLE} MATCH %s LIMIT %s)",
            [query, SEARCH_CANDIDATE_LIMIT + 1],
        )
        count, rowids = cursor.fetchone()
    return None if count > SEARCH_CANDIDATE_LIMIT else rowids


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
