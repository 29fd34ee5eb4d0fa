"""Text search over tasks: every word in the title or the description, through an index where the engine has one.

PostgreSQL: pg_trgm GIN indexes on the very expressions ``icontains`` compiles
to. SQLite: an FTS5 trigram table (``tasks.db_triggers.SEARCH_TABLE``) narrows
the rows to candidates first. The condition itself is always the same
``icontains`` per word, so results never depend on the index being exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from operator import and_, or_
from typing import Any, TypeGuard

from django.db import connections
from django.db.models import BooleanField, Expression, Q, Value
from django.db.models.expressions import Col
from django.db.models.functions import Coalesce
from django.db.models.lookups import IContains
from django.db.models.sql import Query
from django.db.models.sql.where import WhereNode

from tasks.db_triggers import SEARCH_TABLE
from tasks.models import TaskQuerySet

# SQLite: the newest this many candidates are read first. Fewer than that are all the candidates; else the search
# keeps them and every row older than them, or in a page not ordered by creation reads every candidate
# (``_sqlite_candidates``).
SEARCH_NEWEST_CANDIDATES = 500
# The columns a search's terms are looked for in.
SEARCHED_FIELDS = ("title", "description")


def search_tasks(queryset: TaskQuerySet, terms: list[str]) -> TaskQuerySet:
    """Tasks whose title or description holds every term, case-insensitively (``icontains``).

    The condition is always the same ``icontains`` per term. On PostgreSQL it uses the pg_trgm indexes
    as it stands; on SQLite the trigram FTS table first narrows it to candidate rows (a superset of the
    matches): every candidate where they are few, else, for a statement read by creation or in no order, the newest
    candidates and every row older than them (``_sqlite_candidates``, ``_RowIdIn``).
    """
    if not terms:
        return queryset
    connection = connections[queryset.db]
    if connection.vendor == "sqlite":
        candidates = _sqlite_candidates(connection, terms)
        if candidates is not None:
            if candidates.rowids == "[]" and candidates.below is None:
                return queryset.none()
            queryset = queryset.filter(_RowIdIn(candidates))
    return queryset.filter(
        reduce(and_, (reduce(or_, (Q(**{f"{name}__icontains": t}) for name in SEARCHED_FIELDS)) for t in terms))
    )


def searches_text(queryset: TaskQuerySet) -> bool:
    """Whether ``queryset``'s condition holds a search's term (``search_tasks``: ``icontains`` on a searched
    column), at any depth."""

    def holds_term(node: WhereNode) -> bool:
        return any(holds_term(child) if isinstance(child, WhereNode) else _is_term(child) for child in node.children)

    return holds_term(queryset.query.where)


def terms_past_trigram_indexes(queryset: TaskQuerySet) -> TaskQuerySet:
    """``queryset`` with its search's terms matched on ``COALESCE(column, '')``: the same rows (a NULL matches no
    term either way), but no trigram index serves them (PostgreSQL's are on the columns' own expressions), so a
    plan cannot AND one in."""

    def rewritten(node: WhereNode) -> WhereNode:
        children: list[Any] = []  # conditions (lookups, as Django's stubs leave out) and nested nodes
        for child in node.children:
            if isinstance(child, WhereNode):
                children.append(rewritten(child))
            elif _is_term(child):
                column = Coalesce(child.lhs, Value(""), output_field=child.lhs.output_field)
                children.append(IContains(column, child.rhs))
            else:
                children.append(child)
        return node.create(children, connector=node.connector, negated=node.negated)

    narrowed = queryset.all()
    narrowed.query.where = rewritten(narrowed.query.where)
    return narrowed


def _is_term(condition: object) -> TypeGuard[IContains]:
    """Whether ``condition`` is one of a search's terms: ``icontains`` on a searched column (``search_tasks``)."""
    return (
        isinstance(condition, IContains)
        and isinstance(condition.lhs, Col)
        and condition.lhs.target.name in SEARCHED_FIELDS
    )


def _first_sort_key(query: Query) -> Any:
    """The first key a task statement is ordered by (its own ordering, else the model's default), or None."""
    ordering = query.order_by or (query.get_meta().ordering if query.default_ordering else ()) or ()
    return ordering[0] if ordering else None


def reads_newest_first(query: Query) -> bool:
    """Whether ``query`` lists newest first: ordered by ``created_at`` descending before anything else."""
    return _first_sort_key(query) == "-created_at"


def _trigram_query(terms: list[str]) -> str | None:
    """An FTS5 query for the rows holding the first and the last trigram of every term of 3+ characters
    (None: no such term).

    Every row ``icontains`` matches holds them: the trigram tokenizer folds case as ``LIKE`` does (and
    more, beyond ASCII). More trigrams per word would narrow the candidates little (a word's trigrams go
    together) and cost a doclist each; fewer let in many rows that are not matches (``python -m bench.trigrams``)."""
    trigrams: dict[str, None] = {}
    for term in terms:
        if len(term) >= 3:
            trigrams.update(dict.fromkeys((term[:3], term[-3:])))
    return all_of(trigrams) if trigrams else None


def all_of(trigrams: Iterable[str]) -> str:
    """An FTS5 query for the rows holding every one of ``trigrams``, each quoted, so that no character is FTS5
    syntax."""
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in trigrams)


@dataclass(frozen=True)
class _Candidates:
    """Rowids (a JSON array) that hold every term's trigrams and, with ``below``, every row under that rowid too:
    a superset of the matches either way. ``match``, with ``below``: the FTS5 query of every candidate."""

    rowids: str
    below: int | None = None
    match: str = ""


def _sqlite_candidates(connection: Any, terms: list[str]) -> _Candidates | None:
    """The rows the search narrows its condition to on SQLite, or None (no term of 3+ characters: every row).

    The newest SEARCH_NEWEST_CANDIDATES candidates are read first. Fewer than that are every candidate. Else a
    statement read by creation time (newest first, the lists' default, or oldest first) or in no order (a count)
    keeps them and every row older than them: its scan looks up, among the newest rows, only the candidates, and
    goes on below them as the plain scan does, until the page is full. Reading every candidate instead reads the
    trigram index's entries over the whole table (its doclists grow with it, whatever the matches) and each
    candidate's row: from 100,000 tasks up, 1.4 to 4 times the scan's time where the filters keep a share of the
    candidates, and only 15 to 50 % less where they keep few, which a page cannot tell beforehand (BENCHMARKS.md,
    "the search's two paths"). A statement in an order other than by creation (``ordering=title``) could not stop
    its scan at a full page, and reads every candidate from the index instead (``_RowIdIn``, which knows the
    statement's order).
    """
    query = _trigram_query(terms)
    if query is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), json_group_array(rowid), MIN(rowid) FROM (SELECT rowid FROM {SEARCH_TABLE} "
            f"WHERE {SEARCH_TABLE} MATCH %s ORDER BY rowid DESC LIMIT %s)",
            [query, SEARCH_NEWEST_CANDIDATES],
        )
        newest, rowids, oldest = cursor.fetchone()
    if newest < SEARCH_NEWEST_CANDIDATES:
        return _Candidates(rowids)
    return _Candidates(rowids, below=oldest, match=query)


class _RowIdIn(Expression):
    """SQLite: the task's implicit rowid is one of the candidates (a JSON array) or, if they have a ``below``,
    under it."""

    output_field = BooleanField()

    def __init__(self, candidates: _Candidates, alias: str | None = None) -> None:
        super().__init__()
        self.candidates, self.alias = candidates, alias

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

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        rowid = f"{compiler.quote_name_unless_alias(self.alias)}.rowid"
        listed = f"{rowid} IN (SELECT value FROM json_each(%s))"
        if self.candidates.below is None:
            return listed, (self.candidates.rowids,)
        if _first_sort_key(compiler.query) not in (None, "-created_at", "created_at"):
            # Read in another order than the rows' creation, the scan would go through every older row before the
            # page is known: the index's candidates instead.
            every = f"{rowid} IN (SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH %s)"
            return every, (self.candidates.match,)
        # The unary + keeps the older rows' bound out of the planner's reach: as a rowid range, with the list,
        # it would read every older row by rowid and sort them all, instead of the list's scan in its order.
        return f"({listed} OR +{rowid} < %s)", (self.candidates.rowids, self.candidates.below)
