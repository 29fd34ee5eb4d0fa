"""What an agent's outputs take in the database, stored as Crux stores them (``tasks.models.CompressedTextField``:
a long content compressed, on both engines) against the same contents as plain text in the same run; and what the
compression costs a write and a read.

    python -m bench.outputs --engine sqlite --count 2000
    python -m bench.outputs --engine postgres --count 2000

``bench.scale``'s data set writes two short outputs a task (some 90 bytes each), under the size the field
compresses. An agent's real outputs are longer: this writes ``--count`` outputs of four kinds, made from the
repository's own text so that they read as an agent's do (seeded, the same in every run of a revision): log lines,
chunks of 5 to 40 log lines (their messages of words of the README, as often as they occur there), Python
tracebacks, and artifacts (2 to 32 KB of a source or documentation file, as a
file an agent wrote or its diff). Each goes through ``services.add_output`` (masking, validation, its
transaction) into a fresh database (``crux_bench_outputs``); the baseline is a copy of the output table holding the
same rows with the content as plain text. Bytes are each table's b-tree with its overflow pages (SQLite, after a
VACUUM) or its heap with its TOAST (PostgreSQL, after a VACUUM FULL), by kind of output, each kind measured alone.

Costs: microseconds to prepare a content for the database (``get_db_prep_value``: where it is compressed) and to
read it back (``from_db_value``), least of five rounds, against a plain text field's.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from bench.dataset import ROOT, WORDS, configure, git_revision
from bench.report import record
from bench.scale import storage_components

PLAIN_TABLE = "bench_plain_outputs"
LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
# The repository's text an artifact or a traceback is cut from: what a coding agent writes and reads.
SOURCES = ("README.md", "BENCHMARKS.md", "tasks/models.py", "tasks/services/attempts.py", "persistence/mirror.py")


def _log_line(rng: random.Random, at: int, words: list[str]) -> str:
    message = " ".join(rng.choices(words, k=rng.randint(4, 14)))
    return f"2026-12-02T10:{at // 60 % 60:02d}:{at % 60:02d}Z {rng.choice(LEVELS)} agent.{rng.choice(WORDS)}: {message}"


def _chunk(rng: random.Random, at: int, words: list[str]) -> str:
    return "\n".join(_log_line(rng, at + i, words) for i in range(rng.randint(5, 40)))


def _traceback(rng: random.Random, text: dict[str, list[str]]) -> str:
    frames = []
    for _ in range(rng.randint(3, 12)):
        path = rng.choice(SOURCES[2:])
        line = rng.randrange(len(text[path]))
        frames.append(f'  File "/srv/crux/{path}", line {line + 1}, in run\n    {text[path][line].strip()}')
    error = rng.choice(("ValueError", "KeyError", "TimeoutError", "RuntimeError"))
    return "Traceback (most recent call last):\n" + "\n".join(frames) + f"\n{error}: {rng.choice(WORDS)} failed"


def _artifact(rng: random.Random, text: dict[str, list[str]]) -> str:
    lines = text[rng.choice(SOURCES)]
    start = rng.randrange(len(lines))
    out: list[str] = []
    size = rng.randint(2_000, 32_000)
    while sum(map(len, out)) < size and start < len(lines):
        out.append(lines[start])
        start += 1
    return "".join(out)


def contents(count: int, seed: int = 16) -> list[tuple[str, str]]:
    """``count`` (kind, content) pairs of the mix: half log lines, a quarter chunks, a tenth tracebacks, the rest
    artifacts."""
    text = {path: (ROOT / path).read_text().splitlines(keepends=True) for path in SOURCES}
    # A log's messages: words of the same text, as often as they occur there (some 2,000 distinct ones).
    words = re.findall(r"[A-Za-z_]{2,}", "".join(text["README.md"]))
    makers: dict[str, Callable[[random.Random, int], str]] = {
        "log line": lambda rng, at: _log_line(rng, at, words),
        "log chunk": lambda rng, at: _chunk(rng, at, words),
        "traceback": lambda rng, at: _traceback(rng, text),
        "artifact": lambda rng, at: _artifact(rng, text),
    }
    rng = random.Random(seed)
    kinds = rng.choices(list(makers), weights=[50, 25, 10, 15], k=count)
    return [(kind, makers[kind](rng, at)) for at, kind in enumerate(kinds)]


def table_bytes(cursor: Any, vendor: str) -> dict[str, int]:
    """Each table's bytes as ``bench.scale`` counts them: its b-tree with its overflow pages (SQLite) or its heap
    and its TOAST (PostgreSQL)."""
    components, _ = storage_components(cursor, vendor)
    sizes: dict[str, int] = {}
    for table, _name, kind, size in components:
        if kind in ("table", "TOAST"):
            sizes[table] = sizes.get(table, 0) + size
    return sizes


def measure_kind(kind: str, items: list[str]) -> dict[str, float]:
    """Bytes per output of ``items`` stored by Crux and as plain text, each table holding only these."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tasks import services
    from tasks.audit import Channel
    from tasks.models import TaskOutput

    owner, _ = get_user_model().objects.get_or_create(username="bench-outputs")
    task = services.create_task(owner=owner, actor=owner, channel=Channel.COMMAND, title=f"outputs: {kind}")
    TaskOutput.objects.all().delete()
    for content in items:
        services.add_output(task.pk, output_type="log", content=content)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PLAIN_TABLE}")
        if connection.vendor == "sqlite":  # the table's own definition, under another name
            cursor.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'tasks_taskoutput'")
            cursor.execute(cursor.fetchone()[0].replace('"tasks_taskoutput"', PLAIN_TABLE, 1))
        else:  # its definition, with the text column the content had before it was compressed
            cursor.execute(f"CREATE TABLE {PLAIN_TABLE} (LIKE tasks_taskoutput INCLUDING ALL)")
            cursor.execute(f"ALTER TABLE {PLAIN_TABLE} ALTER COLUMN content TYPE text USING ''")
        columns = [cast(str, field.column) for field in TaskOutput._meta.concrete_fields]  # concrete: a column each
        copied = ", ".join("''" if column == "content" else column for column in columns)
        cursor.execute(f"INSERT INTO {PLAIN_TABLE} ({', '.join(columns)}) SELECT {copied} FROM tasks_taskoutput")
        # The content as the API gives it back (masked as stored), as plain text.
        rows = [(output.content, output.pk) for output in TaskOutput.objects.all()]
        cursor.executemany(f"UPDATE {PLAIN_TABLE} SET content = %s WHERE id = %s", rows)
        if connection.vendor == "sqlite":
            cursor.execute("VACUUM")
        else:  # rewritten: the rows of the kind measured before leave no free space behind
            cursor.execute("VACUUM FULL")
        sizes = table_bytes(cursor, connection.vendor)
        stored, plain = sizes["tasks_taskoutput"], sizes[PLAIN_TABLE]
        cursor.execute(f"DROP TABLE {PLAIN_TABLE}")
    text = sum(len(content.encode()) for content in items)
    return {"count": len(items), "text": text / len(items), "stored": stored / len(items), "plain": plain / len(items)}


def costs(items: list[str]) -> dict[str, float]:
    """Microseconds per output to prepare the contents for the database and read them back, Crux's field and a
    plain text field (least of five rounds)."""
    from django.db import connection, models

    from tasks.models import TaskOutput

    field, plain = TaskOutput._meta.get_field("content"), models.TextField()
    stored = [field.get_db_prep_value(content, connection, prepared=True) for content in items]

    def least(work: Callable[[], object]) -> float:
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            work()
            rounds.append(time.perf_counter() - started)
        return min(rounds) * 1e6 / len(items)

    return {
        "write": least(lambda: [field.get_db_prep_value(c, connection, prepared=True) for c in items]),
        "write plain": least(lambda: [plain.get_db_prep_value(c, connection, prepared=True) for c in items]),
        "read": least(lambda: [field.from_db_value(value, None, connection) for value in stored]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--count", type=int, default=2000, help="outputs of the mix (default 2000)")
    args = parser.parse_args()
    configure(args.engine, "crux_bench_outputs", fresh=True)
    mix = contents(args.count)
    by_kind: dict[str, list[str]] = {}
    for kind, content in mix:
        by_kind.setdefault(kind, []).append(content)
    print(f"\noutputs — engine {args.engine}, {args.count:,} outputs of an agent's mix, revision {git_revision()}")
    print(f"{'kind':<12} {'outputs':>8} {'text B':>9} {'plain B':>9} {'stored B':>9} {'ratio':>6}  µs write/plain/read")
    totals: dict[str, float] = {}
    for kind, items in [*by_kind.items(), ("all", [content for _, content in mix])]:
        sizes, spent = measure_kind(kind, items), costs(items)
        ratio = sizes["stored"] / sizes["plain"]
        print(
            f"{kind:<12} {len(items):>8,} {sizes['text']:>9,.0f} {sizes['plain']:>9,.0f} {sizes['stored']:>9,.0f} "
            f"{ratio:>6.2f}  {spent['write']:.1f} / {spent['write plain']:.1f} / {spent['read']:.1f}"
        )
        if kind == "all":
            totals = sizes
    record("outputs", "bytes per output of the mix, stored", engine=args.engine, value=totals["stored"], unit="B")
    record("outputs", "bytes per output of the mix, as plain text", engine=args.engine, value=totals["plain"], unit="B")
    record(
        "outputs",
        "bytes per output of the mix: stored / plain text",
        engine=args.engine,
        value=totals["stored"] / totals["plain"],
        unit="x",
        ratio=totals["stored"] / totals["plain"],
    )
    print(f"stored / plain for the mix: {totals['stored'] / totals['plain']:.2f} ({Path(__file__).name})")


if __name__ == "__main__":
    main()
