"""The list query parameters of GET /api/tasks/persistent (and GET /api/tasks/): each alone, in pairs and all
together, checked against a plain-Python oracle over the same tasks; every invalid value answers 400 naming it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.api.filters import TaskFilter
from tasks.models import Task
from tasks.selectors import lists, newest_window_start
from tests.api_support import client_for, grant

pytest_plugins = ["tests.api_support"]
pytestmark = pytest.mark.django_db

LIST_PATHS = ["/api/tasks/persistent", "/api/tasks/"]

# title, description, role, provider, state: created oldest first.
ROWS = [
    ("Fix login bug", "users cannot log in", "backend", "claude", "running"),
    ("Login page", "new design", "frontend", "openai", "queued"),
    ("Refactor db", "speed up queries behind LOGIN", "backend", "openai", "completed"),
    ("Docs", "write the manual", "docs", "claude", "failed"),
    ("Deploy", "", "ops", "", "pending"),
    ("Audit login flow", "security review", "frontend", "claude", "queued"),
    ("Cleanup", "remove dead code", "backend", "claude", "cancelled"),
    ("Retry", "interrupted login run", "backend", "claude", "interrupted"),
]


@dataclass
class Dataset:
    tasks: list[Task]  # the owner's visible tasks, newest first (the default order)
    marks: list[datetime]  # marks[i]: a time after task i was created and before task i+1


@pytest.fixture
def dataset(user: Any, other_user: Any, task_in: Any) -> Dataset:
    created, marks = [], []
    for title, description, role, provider, state in ROWS:
        created.append(task_in(state, title=title, description=description, role=role, provider=provider))
        marks.append(timezone.now())
    # Never listed for the owner: another user's matching task, and the owner's deleted one.
    task_in("running", owner=other_user, title="login of bob", role="backend", provider="claude")
    task_in("queued", title="deleted login", role="backend", provider="claude", deleted=True)
    return Dataset(tasks=sorted(created, key=lambda t: t.created_at, reverse=True), marks=marks)


# Each list parameter: (value for the query string, predicate over a task) built from the dataset.
Param = Callable[[Dataset], tuple[str, Callable[[Task], bool]]]
PARAMS: dict[str, Param] = {
    "states": lambda d: ("running,queued", lambda t: t.state in {"running", "queued"}),
    "roles": lambda d: ("backend,frontend", lambda t: t.role in {"backend", "frontend"}),
    "providers": lambda d: ("claude", lambda t: t.provider == "claude"),
    "search": lambda d: ("login", lambda t: "login" in f"{t.title} {t.description}".lower()),
    "date_from": lambda d: (d.marks[2].isoformat(), lambda t: t.created_at >= d.marks[2]),
    "date_to": lambda d: (d.marks[5].isoformat(), lambda t: t.created_at <= d.marks[5]),
}
PAGING = {"limit": "2", "offset": "1"}
NAMES = [*PARAMS, *PAGING]
COMBINATIONS = [
    *[(name,) for name in NAMES],
    *itertools.combinations(NAMES, 2),
    tuple(NAMES),
]


def expected_ids(dataset: Dataset, names: tuple[str, ...]) -> tuple[dict[str, str], list[str], int]:
    query, predicates = {}, []
    for name in names:
        if name in PARAMS:
            value, predicate = PARAMS[name](dataset)
            query[name] = value
            predicates.append(predicate)
        else:
            query[name] = PAGING[name]
    matching = [str(t.pk) for t in dataset.tasks if all(p(t) for p in predicates)]
    offset = int(query.get("offset", 0))
    limit = int(query.get("limit", 50))
    return query, matching[offset : offset + limit], len(matching)


@pytest.mark.parametrize("names", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_list_parameters_alone_and_combined(names: tuple[str, ...], dataset: Dataset, api: Any) -> None:
    query, ids, count = expected_ids(dataset, names)
    response = api.get("/api/tasks/persistent", query)
    assert response.status_code == 200, response.data
    assert [t["id"] for t in response.data["results"]] == ids
    assert response.data["count"] == count


def test_every_filter_narrows_the_dataset(dataset: Dataset) -> None:
    """The oracle is not vacuous: each parameter alone keeps some tasks and drops others."""
    for name in PARAMS:
        _, _, count = expected_ids(dataset, (name,))
        assert 0 < count < len(dataset.tasks), name


def test_documented_example_queries(dataset: Dataset, api: Any) -> None:
    """The two example requests of the original specification, verbatim."""
    response = api.get(
        "/api/tasks/persistent?states=running,queued&roles=backend,frontend&providers=claude&search=login"
        "&limit=50&offset=0"
    )
    assert response.status_code == 200
    titles = [t["title"] for t in response.data["results"]]
    assert titles == ["Audit login flow", "Fix login bug"]

    response = api.get("/api/tasks/persistent?date_from=2024-01-01T00:00:00Z&date_to=2024-12-31T23:59:59Z")
    assert response.status_code == 200
    assert response.data["count"] == 0  # every task here was created now, not in 2024
    now = timezone.now()
    response = api.get(f"/api/tasks/persistent?date_from=2024-01-01T00:00:00Z&date_to={now.year + 1}-01-01T00:00:00Z")
    assert response.data["count"] == len(ROWS)


@pytest.mark.parametrize("path", LIST_PATHS)
def test_both_list_paths_filter_alike(path: str, dataset: Dataset, api: Any) -> None:
    response = api.get(path, {"states": "queued", "search": "login"})
    assert response.status_code == 200
    assert sorted(t["title"] for t in response.data["results"]) == ["Audit login flow", "Login page"]


def test_search_needs_every_word_in_title_or_description(dataset: Dataset, api: Any) -> None:
    response = api.get("/api/tasks/persistent", {"search": "login bug"})
    assert [t["title"] for t in response.data["results"]] == ["Fix login bug"]
    response = api.get("/api/tasks/persistent", {"search": "LOGIN   interrupted"})
    assert [t["title"] for t in response.data["results"]] == ["Retry"]


def test_ordering(dataset: Dataset, api: Any) -> None:
    response = api.get("/api/tasks/persistent", {"ordering": "title"})
    titles = [t["title"] for t in response.data["results"]]
    assert titles == sorted(r[0] for r in ROWS)
    response = api.get("/api/tasks/persistent", {"ordering": "-state,title"})
    pairs = [(t["state"], t["title"]) for t in response.data["results"]]
    assert pairs == sorted(pairs, key=lambda p: (_Desc(p[0]), p[1]))


class _Desc:
    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


def test_paging_links_and_cap(dataset: Dataset, api: Any, settings: Any) -> None:
    response = api.get("/api/tasks/persistent", {"limit": 3, "offset": 3})
    assert len(response.data["results"]) == 3
    assert response.data["next"].endswith("/api/tasks/persistent?limit=3&offset=6")
    assert response.data["previous"].endswith("/api/tasks/persistent?limit=3")
    assert api.get("/api/tasks/persistent", {"limit": settings.API_MAX_LIMIT}).status_code == 200
    settings.API_MAX_LIMIT = 5
    response = api.get("/api/tasks/persistent", {"limit": 6})
    assert response.status_code == 400
    assert "at most 5" in response.data["limit"][0]
    assert api.get("/api/tasks/persistent", {"offset": 100}).data["results"] == []


def test_counts_are_exact_up_to_the_limit_then_a_lower_bound(dataset: Dataset, api: Any, settings: Any) -> None:
    exact = api.get("/api/tasks/persistent", {"limit": 2})
    assert (exact.data["count"], exact.data["count_exact"]) == (len(ROWS), True)
    settings.API_EXACT_COUNT_LIMIT = 3  # counted: up to 2 (the page) + 3 past it
    bounded = api.get("/api/tasks/persistent", {"limit": 2})
    assert (bounded.data["count"], bounded.data["count_exact"]) == (5, False)
    assert bounded.data["next"].endswith("limit=2&offset=2")
    ids = []
    page = bounded.data
    while True:  # following next links still reaches every task, exactly once
        ids += [row["id"] for row in page["results"]]
        if page["next"] is None:
            break
        page = api.get(page["next"]).data
    assert ids == [str(task.pk) for task in dataset.tasks]
    assert page["count_exact"] is True and page["count"] == len(ROWS)


INVALID = [
    ({"states": "unknown"}, "states"),
    ({"states": "running,bogus"}, "states"),
    ({"date_from": "not-a-date"}, "date_from"),
    ({"date_to": "2024-13-45T00:00:00Z"}, "date_to"),
    ({"date_from": ""}, "date_from"),
    ({"date_to": ""}, "date_to"),
    ({"date_from": "2024-01-01"}, "date_from"),
    ({"date_to": "2024-01-01T00:00:00"}, "date_to"),
    ({"date_to": "2024-01-01 00:00:00Z"}, "date_to"),
    ({"date_from": "0001-01-01T00:00:00+05:00"}, "date_from"),
    ({"limit": "0"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"offset": "1.5"}, "offset"),
    ({"ordering": "password"}, "ordering"),
    ({"include_deleted": "maybe"}, "include_deleted"),
    ({"include_deleted": ""}, "include_deleted"),
    ({"states": "running,"}, "states"),
    ({"states": ""}, "states"),
    ({"ordering": ""}, "ordering"),
    ({"ordering": "title,,state"}, "ordering"),
    ({"search": "x" * 201}, "search"),
]


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize(("query", "field"), INVALID, ids=[f"{f}={next(iter(q.values()))[:20]}" for q, f in INVALID])
def test_invalid_values_answer_400_naming_the_parameter(
    query: dict[str, str], field: str, path: str, api: Any, task_in: Any
) -> None:
    task_in("running")
    response = api.get(path, query)
    assert response.status_code == 400, response.data
    assert field in response.data, response.data
    assert all(isinstance(m, str) and m for m in response.data[field])


def test_any_valid_offset_is_accepted(api: Any, task_in: Any) -> None:
    """Python and RFC 3339 allow offsets up to 23:59, PostgreSQL only to 15:59: compared in UTC, both work."""
    task_in("running")
    assert api.get("/api/tasks/persistent", {"date_from": "2000-01-01T00:00:00+18:41"}).data["count"] == 1
    assert api.get("/api/tasks/persistent", {"date_to": "2000-01-01T00:00:00-23:59"}).data["count"] == 0


def test_an_inverted_date_range_is_empty(dataset: Dataset, api: Any) -> None:
    response = api.get(
        "/api/tasks/persistent", {"date_from": dataset.marks[5].isoformat(), "date_to": dataset.marks[2].isoformat()}
    )
    assert response.status_code == 200 and response.data["count"] == 0


def test_several_invalid_parameters_are_all_reported(api: Any) -> None:
    response = api.get("/api/tasks/persistent", {"states": "nope", "date_from": "soon", "ordering": "x"})
    assert response.status_code == 400
    assert {"states", "date_from", "ordering"} <= set(response.data)


def test_the_parameters_form_class_is_built_once_and_each_request_checks_its_own(dataset: Dataset, api: Any) -> None:
    """The form class is made once for every request (django-filter made one per request, a third of the filter
    set's time); each request still gets a form, and errors, of its own."""
    assert TaskFilter.get_form_class() is TaskFilter(queryset=Task.objects.none()).get_form_class()
    refused = api.get("/api/tasks/persistent", {"states": "nope", "date_from": "soon"})
    listed = api.get("/api/tasks/persistent", {"states": "queued"})
    assert refused.status_code == 400 and {"states", "date_from"} <= set(refused.data)
    assert listed.status_code == 200 and listed.data["count"] == sum(row[4] == "queued" for row in ROWS)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/tasks/not-a-uuid"),
        ("delete", "/api/tasks/not-a-uuid?confirm=true"),
        ("get", "/api/tasks/not-a-uuid/status"),
        ("get", "/api/tasks/history/not-a-uuid"),
        ("get", "/api/tasks/outputs/not-a-uuid"),
        ("post", "/api/tasks/outputs/not-a-uuid"),
        ("post", "/api/tasks/1234/cancel?confirm=true"),
        ("post", "/api/tasks/1234/recover"),
        ("post", "/api/tasks/1234/restore"),
    ],
)
def test_malformed_task_id_is_400_naming_task_id(method: str, path: str, user: Any) -> None:
    client = client_for(grant(user, "soft_delete_task", "recover_task", "restore_task"))
    response = getattr(client, method)(path)
    assert response.status_code == 400
    assert "task_id" in response.data


def test_malformed_legacy_job_id_names_job_id(api: Any) -> None:
    response = api.get("/api/v1/jobs/xyz")
    assert response.status_code == 400
    assert "job_id" in response.data


def test_include_deleted(dataset: Dataset, user: Any, staff: Any) -> None:
    owner = client_for(user)
    response = owner.get("/api/tasks/persistent", {"include_deleted": "true"})
    assert response.status_code == 403
    assert "include_deleted" in response.data["detail"]
    assert owner.get("/api/tasks/persistent", {"include_deleted": "false"}).data["count"] == len(ROWS)

    trash_keeper = client_for(grant(user, "restore_task"))
    response = trash_keeper.get("/api/tasks/persistent", {"include_deleted": "true"})
    titles = [t["title"] for t in response.data["results"]]
    assert "deleted login" in titles and len(titles) == len(ROWS) + 1

    staff_view = client_for(staff)
    assert staff_view.get("/api/tasks/persistent").data["count"] == len(ROWS) + 1  # bob's task, not the deleted
    assert staff_view.get("/api/tasks/persistent", {"include_deleted": "true"}).data["count"] == len(ROWS) + 2


def test_empty_list_values_are_ignored(dataset: Dataset, api: Any) -> None:
    response = api.get("/api/tasks/persistent", {"roles": "", "providers": "", "search": ""})
    assert response.status_code == 200
    assert response.data["count"] == len(ROWS)


@pytest.mark.parametrize("window", [0, 1, 3, 9, 10])
def test_counting_among_the_newest_tasks_keeps_every_page(
    window: int, dataset: Dataset, api: Any, settings: Any
) -> None:
    """With the count bounded to the table's ``window`` newest tasks (10 here: 8 listed, another user's, a deleted
    one), every combination lists the same page as the oracle; the count is exact when it says so, else a lower
    bound that still announces the next page."""
    settings.API_COUNT_WINDOW = window
    for names in COMBINATIONS:
        query, ids, count = expected_ids(dataset, names)
        for ordering in ("-created_at", "title"):
            response = api.get("/api/tasks/persistent", {**query, "ordering": ordering})
            assert response.status_code == 200, response.data
            data = response.data
            if ordering == "-created_at":
                assert [t["id"] for t in data["results"]] == ids, names
            offset = int(query.get("offset", 0))
            if data["count_exact"]:
                assert data["count"] == count, names
            else:
                assert window < 10, names  # the table fits in the window: every count is exact
                assert data["count"] <= count, names
                if data["results"]:  # a full page (else exact): at least one more task, and a link to it
                    assert offset + len(data["results"]) < data["count"] and data["next"], names


def test_a_count_beyond_the_window_is_what_the_newest_tasks_hold(dataset: Dataset, api: Any, settings: Any) -> None:
    """The 6 newest tasks are the deleted one, another user's and the owner's last 4: a full page counts those 4."""
    settings.API_COUNT_WINDOW = 6
    bounded = api.get("/api/tasks/persistent", {"limit": 1}).data
    assert (bounded["count"], bounded["count_exact"]) == (4, False)
    assert bounded["next"].endswith("limit=1&offset=1")
    settings.API_COUNT_WINDOW = 0  # nothing counted: a full page still announces at least one more task
    assert api.get("/api/tasks/persistent", {"limit": 3}).data["count"] == 4
    ids, page = [], api.get("/api/tasks/persistent", {"limit": 3}).data
    while True:  # following next links still reaches every task, exactly once; the last page's count is exact
        ids += [row["id"] for row in page["results"]]
        if page["next"] is None:
            break
        page = api.get(page["next"]).data
    assert ids == [str(task.pk) for task in dataset.tasks]
    assert (page["count"], page["count_exact"]) == (len(ROWS), True)


def test_few_matches_are_counted_exactly_whatever_the_window(dataset: Dataset, api: Any, settings: Any) -> None:
    """A page that is not full ends the matches: its count is exact, also when they are all older than the window."""
    settings.API_COUNT_WINDOW = 0
    oldest_two = api.get("/api/tasks/persistent", {"date_to": dataset.marks[1].isoformat()}).data
    assert (oldest_two["count"], oldest_two["count_exact"]) == (2, True)
    past_the_end = api.get("/api/tasks/persistent", {"limit": 5, "offset": 5}).data
    assert (past_the_end["count"], past_the_end["count_exact"], past_the_end["next"]) == (len(ROWS), True, None)
    beyond = api.get("/api/tasks/persistent", {"offset": 100}).data
    assert beyond["results"] == [] and beyond["count_exact"] is False and beyond["next"] is None


@pytest.mark.parametrize("ordering", ["-created_at", "title"])
@pytest.mark.parametrize(
    ("search", "owner_of"),
    [
        ("", "most tasks"),
        ("login", "most tasks"),
        pytest.param(
            "login",
            "few tasks",
            marks=pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan of the count"),
        ),
    ],
)
def test_a_count_is_what_the_window_holds_and_runs_only_where_it_can_change_it(
    search: str,
    ordering: str,
    owner_of: str,
    dataset: Dataset,
    api: Any,
    other_user: Any,
    task_in: Any,
    settings: Any,
    monkeypatch: Any,
) -> None:
    """Every window, offset and limit: the count is task_page's definition, computed here from the table (exact
    on the last page or when the table fits the window, else the window's matches, at least the page's end and
    one more). The count's statement runs unless the list is read newest first and the row after the page is
    older than the window: then every match the window holds was read, and counting them could not change it.
    The owner holds most of the tasks, or few (the other user's newer ones added): PostgreSQL's two plans of a
    search's count (``COUNT_PLANS``)."""
    _fresh_statistics(monkeypatch, crowd=(other_user, task_in) if owner_of == "few tasks" else None)
    settings.API_EXACT_COUNT_LIMIT = 2
    table = list(Task.objects.order_by("-created_at", "-pk"))
    matches = [t for t in dataset.tasks if search in f"{t.title} {t.description}".lower()]
    if ordering == "title":
        matches.sort(key=lambda task: task.title)
    for window, offset, limit in itertools.product(range(len(table) + 1), range(4), range(1, 4)):
        settings.API_COUNT_WINDOW = window
        cap = offset + limit + settings.API_EXACT_COUNT_LIMIT
        has_next = len(matches) > offset + limit
        last_page = not has_next and (matches[offset : offset + limit] or offset == 0)
        if last_page:
            expected = (offset + len(matches[offset : offset + limit]), True)
        elif window >= len(table):
            expected = (min(len(matches), cap), len(matches) <= cap)
        else:
            held = sum(task in table[:window] for task in matches)
            expected = (max(min(held, cap), offset + limit + 1) if has_next else min(held, cap), False)
        query = {"search": search, "offset": offset, "limit": limit, "ordering": ordering}
        with CaptureQueriesContext(connection) as queries:
            data = api.get("/api/tasks/persistent", query).data
        case = (window, offset, limit)
        assert [row["id"] for row in data["results"]] == [str(t.pk) for t in matches[offset : offset + limit]], case
        assert (data["count"], data["count_exact"]) == expected, case
        counts = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT COUNT(*) FROM")]
        read_past = (
            ordering == "-created_at"
            and window < len(table)
            and has_next
            and matches[offset + limit] not in table[:window]
        )
        assert bool(counts) == (not last_page and not read_past), case
        if counts and window < len(table) and search and connection.vendor == "postgresql":
            assert ("COALESCE" in counts[0]) is (owner_of == "few tasks"), case


def test_the_window_starts_after_the_newest_tasks(dataset: Dataset) -> None:
    """newest_window_start: the created_at of the task just older than the window, None when the table fits."""
    stamps = sorted(Task.objects.values_list("created_at", flat=True), reverse=True)
    assert newest_window_start("default", len(stamps)) is None
    assert newest_window_start("default", len(stamps) - 1) == stamps[-1]
    assert newest_window_start("default", 0) == stamps[0]


def _window_start_reads(window: int) -> tuple[datetime | None, list[str]]:
    """newest_window_start(window) and the statements it ran."""
    with CaptureQueriesContext(connection) as queries:
        start = newest_window_start("default", window)
    return start, [query["sql"] for query in queries.captured_queries]


def test_the_window_start_is_read_again_once_a_task_is_created(dataset: Dataset, task_in: Any) -> None:
    """The start is kept while the newest task is the same: a second list reads the newest task alone (one index
    entry), not the window's entries again; a task created since moves the window, and its start is read again."""
    window = 3
    start, first = _window_start_reads(window)
    again, second = _window_start_reads(window)
    assert again == start and len(first) == 2 and len(second) == 1
    assert "OFFSET" in first[1] and "OFFSET" not in second[0]
    task_in("queued", title="newer")
    moved, third = _window_start_reads(window)
    stamps = sorted(Task.objects.values_list("created_at", flat=True), reverse=True)
    assert moved == stamps[window] != start and len(third) == 2
    assert _window_start_reads(window + 1)[0] == stamps[window + 1]  # each window its own start


def test_a_kept_window_start_is_read_again_after_its_age(dataset: Dataset, monkeypatch: Any) -> None:
    """However still the table, the start is read again after WINDOW_START_MAX_AGE seconds: a purge's removals
    (which leave the newest task) move it in time."""
    start, _ = _window_start_reads(2)
    monkeypatch.setattr(lists, "WINDOW_START_MAX_AGE", 0.0)
    again, statements = _window_start_reads(2)
    assert again == start and len(statements) == 2 and "OFFSET" in statements[1]


# A search's count on PostgreSQL, by who lists: the planner setting it turns off, and whether its terms are matched
# past the trigram indexes (an owner of few of the tasks has the window read through a bitmap of the owner's index).
COUNT_PLANS = {
    "owner of few tasks": ("enable_indexscan", True),
    "owner of most tasks": ("enable_bitmapscan", False),
    "staff": ("enable_bitmapscan", False),
}
OTHERS_TASKS = 27  # with them, the owner holds 9 of 37 tasks: under lists.FEW_TASKS_SHARE


@dataclass
class Lister:
    client: Any
    scans: str  # the planner setting its search's count turns off
    past_trigram_indexes: bool  # whether the count matches its terms on COALESCE(column, '')
    sees: Callable[[Task], bool]  # whether it lists the task (the trash left out)


@pytest.fixture(params=COUNT_PLANS)
def lister(
    request: Any, dataset: Dataset, api: Any, staff: Any, other_user: Any, task_in: Any, monkeypatch: Any
) -> Lister:
    """Who lists (``COUNT_PLANS``), with the task table's statistics as ANALYZE leaves them (read afresh): the owner
    holds 9 of its 10 tasks, or of 37 where the other user has ``OTHERS_TASKS`` more (the newest, no match)."""
    _fresh_statistics(monkeypatch, crowd=(other_user, task_in) if request.param == "owner of few tasks" else None)
    owner = dataset.tasks[0].owner_id
    scans, past_trigram_indexes = COUNT_PLANS[request.param]
    if request.param == "staff":
        return Lister(client_for(staff), scans, past_trigram_indexes, lambda task: task.deleted_at is None)
    return Lister(api, scans, past_trigram_indexes, lambda task: task.deleted_at is None and task.owner_id == owner)


def _fresh_statistics(monkeypatch: Any, *, crowd: tuple[Any, Any] | None) -> None:
    """The task table's statistics as ANALYZE leaves them, read afresh by ``lists.owner_share``; first, with
    ``crowd`` (a user and ``task_in``), ``OTHERS_TASKS`` newer tasks of that user, none a match."""
    if crowd is not None:
        other_user, task_in = crowd
        for number in range(OTHERS_TASKS):
            task_in("completed", owner=other_user, title=f"other work {number}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")
    monkeypatch.setattr(lists, "_OWNER_SHARES", {})


def _count_leaves_the_planner_as_it_found_it(lister: Lister, settings: Any) -> list[str]:
    """The statements of a list whose count runs; asserts that its scans are on again after it."""
    settings.API_COUNT_WINDOW = Task.objects.count() - 4  # the row after the page is in it: the count runs
    with CaptureQueriesContext(connection) as queries:
        assert lister.client.get("/api/tasks/persistent", {"limit": 1, "search": "login"}).data["count_exact"] is False
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {lister.scans}")
        assert cursor.fetchone()[0] == "on"
    statements = [query["sql"] for query in queries.captured_queries]
    assert f"SET LOCAL {lister.scans} = off" in statements
    return statements


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner setting")
def test_the_count_leaves_the_planner_as_it_found_it(lister: Lister, settings: Any) -> None:
    """The count turns its scans off for its one statement only, inside the caller's transaction too (the test's
    here): it restores the setting it read."""
    statements = _count_leaves_the_planner_as_it_found_it(lister, settings)
    assert any(f"set_config('{lister.scans}'" in sql for sql in statements)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner setting")
def test_the_count_in_its_own_transaction_needs_no_restore(lister: Lister, settings: Any) -> None:
    """Outside any transaction the count's own ends its SET LOCAL: it reads and restores nothing (two round trips
    fewer), and the setting is on again after it."""
    statements = _count_leaves_the_planner_as_it_found_it(lister, settings)
    assert not any(f"{lister.scans}'" in sql for sql in statements)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner setting")
def test_a_search_count_is_planned_by_who_lists(lister: Lister, settings: Any) -> None:
    """An owner of few of the tasks counts its terms on COALESCE(column, ''), which no trigram index serves, with
    plain index scans off; an owner of most of them and staff keep the columns' own expressions with bitmap scans
    off. Each counts what the window holds: its matches among the newest tasks, the trash left out."""
    window = Task.objects.count() - 2  # holds more of the owner's matches (3) than the page's lower bound (2)
    settings.API_COUNT_WINDOW = window
    newest = Task.objects.order_by("-created_at", "-pk")[:window]
    held = sum("login" in f"{task.title} {task.description}".lower() and lister.sees(task) for task in newest)
    with CaptureQueriesContext(connection) as queries:
        data = lister.client.get("/api/tasks/persistent", {"limit": 1, "search": "login"}).data
    assert (data["count"], data["count_exact"]) == (held, False) and held > 2
    statements = [query["sql"] for query in queries.captured_queries]
    (count,) = [sql for sql in statements if sql.startswith("SELECT COUNT(*) FROM")]
    assert f"SET LOCAL {lister.scans} = off" in statements
    assert ("COALESCE" in count) is lister.past_trigram_indexes
    assert count.count("LIKE UPPER") == 2  # the one term, in the title and the description


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statistics")
def test_an_owners_share_is_the_statistics_of_the_table(
    dataset: Dataset, other_user: Any, task_in: Any, monkeypatch: Any
) -> None:
    """owner_share: None before the table has statistics; then each owner's share by them, and an owner they do
    not name at most the least common's; read again only after OWNER_SHARES_MAX_AGE."""
    owner = dataset.tasks[0].owner_id
    monkeypatch.setattr(lists, "_OWNER_SHARES", {})
    with connection.cursor() as cursor:  # the suite's own database; the test's transaction puts them back
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'tasks_task'::regclass")
    assert lists.owner_share("default", owner) is None
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")
    assert lists.owner_share("default", owner) is None  # kept for OWNER_SHARES_MAX_AGE
    monkeypatch.setattr(lists, "OWNER_SHARES_MAX_AGE", 0.0)
    assert lists.owner_share("default", owner) == pytest.approx(0.9)  # 9 of the 10 tasks
    assert lists.owner_share("default", other_user.pk) == pytest.approx(0.1)
    assert lists.owner_share("default", other_user.pk + owner + 1000) == pytest.approx(0.1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner setting")
def test_a_count_without_search_terms_is_one_statement(dataset: Dataset, api: Any, settings: Any) -> None:
    """Only a search's trigram index tempts the planner into a bitmap scan: a list of other filters counts its
    window in one statement, without the transaction and the setting around it."""
    settings.API_COUNT_WINDOW = 5
    with CaptureQueriesContext(connection) as queries:
        data = api.get("/api/tasks/persistent", {"limit": 1, "roles": "backend,frontend"}).data
    assert (data["count"], data["count_exact"]) == (3, False)  # Retry, Cleanup and Audit: the window holds 3
    statements = [query["sql"] for query in queries.captured_queries]
    assert sum(sql.startswith("SELECT COUNT(*) FROM") for sql in statements) == 1
    assert not any("enable_bitmapscan" in sql for sql in statements)
