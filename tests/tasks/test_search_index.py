"""Search (``search=``) through its index: the same results as a plain case-insensitive substring
match of every word in the title or the description, for new, edited and erased tasks; on SQLite the FTS5
trigram table and its triggers exist after migrations, on PostgreSQL the query uses the pg_trgm indexes."""

from __future__ import annotations

from functools import reduce
from operator import and_
from typing import Any

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from persistence import planner
from persistence.tasks import search_index_merge
from tasks import db_triggers, services
from tasks.audit import Channel, audited
from tasks.models import Task
from tasks.selectors import search as search_module
from tasks.selectors import search_tasks, task_list
from tasks.selectors.lists import _created_after

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db

TEXTS = [
    ("Fix LOGIN bug", "users cannot sign in"),
    ("Billing export", "monthly invoices; cache warm-up"),
    ("Cache layer", "speeds up the login page and billing"),
    ("Résumé parser", "handles ÉCOLE and école"),
    ("100% done_ish", 'quote "this" and back\\slash'),
    ("Short", "ab cd ef"),
    ("Operator", "description only: kubernetes operator"),
]
SEARCHES = [
    "login", "LOGIN", "LoGiN", "ogi", "gin", "log in", "cache billing", "billing cache login", "export",
    "warm-up", "kubernetes", "KUBER", "netes", "absentword", "ab", "a", "cd ef", "login ab", "%", "100%",
    "done_ish", "_", '"this"', 'quote "', "back\\slash", "\\", "école", "ÉCOLE", "résumé", "sumé", "école xyz",
]  # fmt: skip


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.content
    return {task["id"] for task in response.data["results"]}


def oracle(owner: Any, search: str) -> set[str]:
    """The plain ``icontains`` per word, on this database, without any index's help."""
    words = search.split()
    condition = reduce(and_, (Q(title__icontains=w) | Q(description__icontains=w) for w in words))
    return {str(pk) for pk in Task.objects.alive().filter(owner=owner).filter(condition).values_list("pk", flat=True)}


def python_match(task: Task, search: str) -> bool:
    return all(w.lower() in task.title.lower() or w.lower() in task.description.lower() for w in search.split())


@pytest.fixture
def texts(task_in: Any) -> list[Task]:
    return [task_in("queued", title=title, description=description) for title, description in TEXTS]


@pytest.mark.parametrize("search", SEARCHES)
def test_search_equals_a_plain_substring_match(search: str, texts: list[Task], api: Any) -> None:
    found = ids(api.get("/api/tasks/persistent", {"search": search, "limit": 100}))
    assert found == oracle(texts[0].owner, search)
    if search.isascii():  # beyond ASCII, case folding is the database's (SQLite's LIKE folds ASCII only)
        assert found == {str(t.pk) for t in texts if python_match(t, search)}


@pytest.mark.parametrize("newest", [1, 2, 3, 500])
def test_the_newest_candidates_and_the_rows_below_them_keep_every_page(
    newest: int, texts: list[Task], user: Any, api: Any, monkeypatch: Any
) -> None:
    """SQLite reads the newest candidates first: fewer than ``newest`` are every candidate; else a page read by
    creation keeps those and every row older than them, and a page in another order reads every candidate. Either way
    each page, in every order, with its count, is the plain match's, also where creation times do not follow the
    rows' insertion (the first task made the newest)."""
    monkeypatch.setattr(search_module, "SEARCH_NEWEST_CANDIDATES", newest)
    first = texts[0]
    first.created_at = timezone.now()
    with audited(user, channel=Channel.API, reason="newest by creation, oldest by insertion"):
        first.save()
    orderings = ("-created_at", "created_at", "title")
    forms: dict[str, set[str]] = {ordering: set() for ordering in orderings}
    for search in ("login", "cache billing", "kubernetes", "ogi ab", "école", "absentword", "e", "and", "and ing"):
        matching = Task.objects.filter(pk__in=oracle(first.owner, search))
        for ordering in orderings:
            expected = [str(pk) for pk in matching.order_by(ordering).values_list("pk", flat=True)]
            for limit, offset in ((1, 0), (2, 1), (100, 0)):
                query = {"search": search, "ordering": ordering, "limit": limit, "offset": offset}
                with CaptureQueriesContext(connection) as queries:
                    response = api.get("/api/tasks/persistent", query)
                assert response.status_code == 200, response.content
                assert [task["id"] for task in response.data["results"]] == expected[offset : offset + limit]
                assert (response.data["count"], response.data["count_exact"]) == (len(expected), True)
                pages = [q["sql"] for q in queries.captured_queries if 'ORDER BY "tasks_task".' in q["sql"]]
                forms[ordering] |= {
                    "rows below" if "rowid <" in sql else "every candidate" if " MATCH " in sql else "listed"
                    for sql in pages
                }
    # Each path under test was taken where it can be: SQLite, with more candidates than the newest read (the texts
    # are seven, so every candidate of every search is among the newest 500).
    if connection.vendor == "sqlite" and newest < 500:
        for ordering in ("-created_at", "created_at"):
            assert "rows below" in forms[ordering] and "every candidate" not in forms[ordering], forms
        assert "every candidate" in forms["title"] and "rows below" not in forms["title"], forms
    else:
        assert not any(form & {"rows below", "every candidate"} for form in forms.values()), forms


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query planner")
@pytest.mark.parametrize("who", ["owner", "staff"])
def test_the_rows_below_the_newest_candidates_are_read_in_the_lists_order(
    who: str, texts: list[Task], staff: Any, monkeypatch: Any
) -> None:
    """With the rows older than the newest candidates in the condition, the page and the newest window's count
    still read the list's index in its order: the planner must not take the older rows as a rowid range (with
    the candidates, a MULTI-INDEX OR), which reads and sorts every older row (0.4 s a query at a million)."""
    monkeypatch.setattr(search_module, "SEARCH_NEWEST_CANDIDATES", 1)
    searched = search_tasks(task_list(texts[0].owner if who == "owner" else staff).alive(), ["and"])
    counted = _created_after(searched, texts[0].created_at).order_by()[:1000]
    for query in (searched[:51], counted):
        sql, params = query.query.sql_with_params()
        assert "rowid <" in sql
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " / ".join(row[-1] for row in cursor.fetchall())
        assert "MULTI-INDEX OR" not in plan and "USING INDEX task_" in plan, plan


def test_substrings_in_title_and_description_case_insensitively(texts: list[Task], api: Any) -> None:
    fix, billing, cache, *_ = texts
    assert ids(api.get("/api/tasks/persistent", {"search": "OGI"})) == {str(fix.pk), str(cache.pk)}
    assert ids(api.get("/api/tasks/persistent", {"search": "Invoice"})) == {str(billing.pk)}
    assert ids(api.get("/api/tasks/persistent", {"search": "billing CACHE"})) == {str(billing.pk), str(cache.pk)}
    assert ids(api.get("/api/tasks/persistent", {"search": "billing cache login"})) == {str(cache.pk)}
    assert ids(api.get("/api/tasks/persistent", {"search": "KUBERNETES operator"})) == {str(texts[-1].pk)}


def test_new_edited_and_erased_tasks(user: Any, task_in: Any, api: Any) -> None:
    def found(search: str) -> set[str]:
        return ids(api.get("/api/tasks/persistent", {"search": search}))

    assert found("zeppelin") == set()
    task = task_in("queued", title="Zeppelin launch", description="hangar doors")
    assert found("ZEPPELIN") == {str(task.pk)}
    assert found("hangar") == {str(task.pk)}

    services.update_task(task.pk, actor=user, channel=Channel.API, reason="test", title="Airship launch")
    assert found("zeppelin") == set()
    assert found("airship hangar") == {str(task.pk)}
    services.update_task(task.pk, actor=user, channel=Channel.API, reason="test", description="runway lights")
    assert found("hangar") == set()
    assert found("runway") == {str(task.pk)}
    # A save that does not touch the text keeps the task findable.
    services.update_task(task.pk, actor=user, channel=Channel.API, reason="test", title="Airship launch")
    assert found("airship runway") == {str(task.pk)}

    assert services.erase_tasks([task.pk]) == 1
    assert found("airship") == set()
    assert found("runway") == set()
    other = task_in("queued", title="Airship two")
    assert found("airship") == {str(other.pk)}
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # raises if the index and tasks_task disagree
            table = db_triggers.SEARCH_TABLE
            cursor.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's FTS5 search table")
def test_the_index_split_by_single_inserts_is_merged_into_one_segment_that_finds_the_same_tasks(
    live_db: Any, user: Any, api: Any
) -> None:
    """Each task's own transaction writes a segment; FTS5's automerge leaves several. Beat's job merges them
    (``persistence.planner.merge_search_index``), a step a transaction until a step merges nothing, and then has
    nothing to do."""
    # From an empty index: the flush of an earlier test's tasks leaves its deletions there as segments, which the
    # automerge of the inserts below may fold into one.
    table = db_triggers.SEARCH_TABLE
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
    assert planner.search_segments() == 0
    words = ("login", "cache", "billing", "export")
    for i in range(40):
        title, description = f"{words[i % 4]} {words[(i // 4) % 4]} task {i}", f"step {i} audit"
        services.submit_task(owner=user, actor=user, channel=Channel.API, title=title, description=description)
    assert planner.search_segments() > 1
    searches = ("login", "cache export", "task 3", "audit", "kubernetes")
    found = {search: ids(api.get("/api/tasks/persistent", {"search": search, "limit": 100})) for search in searches}
    assert found == {search: oracle(user, search) for search in searches}
    assert [len(found[search]) for search in searches] == [19, 5, 13, 40, 0]
    with CaptureQueriesContext(connection) as queries:
        steps = search_index_merge()
    assert steps >= 1
    assert sum("'merge'" in query["sql"] for query in queries.captured_queries) == steps + 1  # the last merged nothing
    assert planner.search_segments() == 1
    assert {
        search: ids(api.get("/api/tasks/persistent", {"search": search, "limit": 100})) for search in searches
    } == found
    assert search_index_merge() == 0


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's FTS5 search table")
def test_sqlite_search_table_and_triggers_exist_after_migrations() -> None:
    """A migration that remakes tasks_task drops its triggers: it must run install_search again."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
        triggers = dict(cursor.fetchall())
        cursor.execute("SELECT sql FROM sqlite_master WHERE name = %s", [db_triggers.SEARCH_TABLE])
        (sql,) = cursor.fetchone()
    assert {name: triggers.get(name) for name in db_triggers.SEARCH_TRIGGERS} == dict.fromkeys(
        db_triggers.SEARCH_TRIGGERS, "tasks_task"
    )
    assert "trigram" in sql and "content='tasks_task'" in sql


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's pg_trgm indexes")
def test_postgresql_search_uses_the_trigram_indexes(user: Any) -> None:
    """The SQL ``icontains`` compiles to matches the indexes' expressions (with the few rows of a test, the
    planner would rather scan: forbid it)."""
    query = Task.objects.filter(Q(title__icontains="kubernetes") | Q(description__icontains="kubernetes"))
    sql, params = query.order_by().query.sql_with_params()
    with connection.cursor() as cursor:  # in the test's transaction: SET LOCAL holds until its end
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "task_title_trgm" in plan and "task_description_trgm" in plan, plan
