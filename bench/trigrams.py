"""How precise SQLite's search candidates are on real text, by the trigrams the search asks its index for.

    python -m bench.trigrams

On SQLite a search first reads candidate rows from an FTS5 trigram index (``tasks.selectors.search``): those holding
the first and the last trigram of every word, a superset of the matches that the word conditions then filter.
Each trigram read is a doclist: fewer per word would make the read cheaper, but let in more rows that are not
matches. ``bench.scale``'s data set cannot tell the choices apart (its 13 words share no trigram), so this measures
them on real text: every line of at least 20 characters of the repository's own documentation and code (English
prose, tables, identifiers, as task titles and descriptions are), one row each, in an in-memory FTS5 table made as
the search's is (trigram tokenizer, ``detail=none``). Queries are 1, 2 or 3 words of 4 letters or more drawn from
one random row (seeded: the same in every run of a revision), so each has a match. For each query and choice:
candidates ÷ rows that hold every word (case-insensitively, as ``icontains``); the median and the 90th percentile
over the queries, and the median time of the index read.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.dataset import ROOT, git_revision
from bench.report import record

SOURCES = ("README.md", "BENCHMARKS.md", "crux", "tasks", "persistence", "retention", "bench")
WORD = re.compile(r"[A-Za-z_]{4,}")
COUNT_CANDIDATES = "SELECT count(*) FROM text WHERE text MATCH ?"


def corpus() -> list[str]:
    """Every line of at least 20 characters of the documentation and the code, stripped."""
    paths: list[Path] = []
    for source in SOURCES:
        path = ROOT / source
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [line.strip() for path in paths for line in path.read_text().splitlines() if len(line.strip()) >= 20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300, help="queries per number of words (default 300)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crux.settings")
    import django

    django.setup()
    from tasks.selectors.search import _trigram_query, all_of

    rows = corpus()
    folded = [row.lower() for row in rows]
    index = sqlite3.connect(":memory:")
    index.execute("CREATE VIRTUAL TABLE text USING fts5(body, tokenize='trigram', detail='none')")
    index.executemany("INSERT INTO text (rowid, body) VALUES (?, ?)", enumerate(rows, 1))
    choices: dict[str, Callable[[list[str]], str | None]] = {
        "first and last of each word (the search's)": _trigram_query,
        "first of each word": lambda terms: all_of(dict.fromkeys(term[:3] for term in terms)),
        "every trigram of each word": lambda terms: all_of(
            dict.fromkeys(term[i : i + 3] for term in terms for i in range(len(term) - 2))
        ),
    }
    print(f"\ntrigram candidates on real text — {len(rows):,} lines of the repository, revision {git_revision()}")
    print(f"{'words':>5}  {'trigrams read':<44} {'candidates ÷ matches':>22} {'p90':>8} {'read, ms':>9}")
    rng = random.Random(1)
    with_words = [words for row in rows if (words := WORD.findall(row))]
    for count in (1, 2, 3):
        queries: list[list[str]] = []
        while len(queries) < args.queries:
            words = rng.choice(with_words)
            if len(set(words)) >= count:
                queries.append(rng.sample(sorted(set(words)), count))
        matches = [sum(all(term.lower() in row for term in terms) for row in folded) for terms in queries]
        for name, choice in choices.items():
            ratios, times = [], []
            for terms, matched in zip(queries, matches, strict=True):
                started = time.perf_counter()
                (candidates,) = index.execute(COUNT_CANDIDATES, [choice(terms)]).fetchone()
                times.append((time.perf_counter() - started) * 1000)
                ratios.append(candidates / matched)
            ratios.sort()
            median, p90 = statistics.median(ratios), ratios[int(len(ratios) * 0.9)]
            print(f"{count:>5}  {name:<44} {median:>22.2f} {p90:>8.2f} {statistics.median(times):>9.3f}")
            record(
                "trigrams", f"{count} word(s), {name}: candidates / matches (median)", engine="sqlite",
                value=median, unit="x", size=len(rows),
            )  # fmt: skip


if __name__ == "__main__":
    main()
