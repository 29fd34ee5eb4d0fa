"""One table for the whole benchmark run: every bench module records its rows here.

    BENCH_RESULTS=var/bench/results.jsonl python -m bench.submit ...   # modules append rows
    python -m bench.report var/bench/results.jsonl                    # one table of them all

A module calls ``record(...)`` for each figure it prints. When ``BENCH_RESULTS``
names a file, the row is appended to it as one JSON line; otherwise nothing is
written (a module run on its own still prints its own table). ``make bench``
sets the variable, runs every module, then prints this module's table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_ENV = "BENCH_RESULTS"


@dataclass
class Row:
    """One measured figure, with its baseline and goal when it has them (ratios are computed in the same run)."""

    section: str
    measure: str
    engine: str
    value: float
    unit: str
    p95: float | None = None
    p99: float | None = None
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None
    size: int | None = None


def record(
    section: str,
    measure: str,
    *,
    engine: str,
    value: float,
    unit: str,
    p95: float | None = None,
    p99: float | None = None,
    ratio: float | None = None,
    goal: str = "",
    met: bool | None = None,
    size: int | None = None,
) -> Row:
    """Append one row to the run's results file (if ``BENCH_RESULTS`` is set) and return it."""
    row = Row(section, measure, engine, value, unit, p95, p99, ratio, goal, met, size)
    path = os.environ.get(RESULTS_ENV)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(row)) + "\n")
    return row


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank: what was actually observed, never interpolated."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    """Median, p95 and p99 of a list of timings."""
    return {"median": statistics.median(values), "p95": percentile(values, 0.95), "p99": percentile(values, 0.99)}


def report_timings(
    section: str,
    rows: dict[str, list[float]],
    *,
    engine: str,
    size: int,
    baseline: str,
    judge: Callable[[str, dict[str, float]], tuple[str, bool | None]],
) -> None:
    """Print median, p95, p99 (ms) and the median's ratio to ``baseline``'s for each measure, and record each;
    ``judge(name, figures)`` gives the measure's goal and whether it is met ("", None: no goal)."""
    base = statistics.median(rows[baseline])
    width = max(len(name) for name in rows) + 2
    print(f"{'measure (ms)':<{width}} {'median':>8} {'p95':>8} {'p99':>8} {'x baseline':>11}")
    for name, values in rows.items():
        figures = summary(values)
        med = figures["median"]
        print(f"{name:<{width}} {med:>8.2f} {figures['p95']:>8.2f} {figures['p99']:>8.2f} {_number(med / base):>11}")
        goal, met = judge(name, figures)
        record(section, name, engine=engine, size=size, value=med, unit="ms", p95=figures["p95"],
               p99=figures["p99"], ratio=med / base, goal=goal, met=met)  # fmt: skip


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(rows: list[Row]) -> str:
    """The rows as one Markdown table, in the order they were recorded."""
    lines = [
        "| section | engine | size | measure | value | p95 | p99 | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        size = f"{row.size:,}" if row.size else ""
        lines.append(
            f"| {row.section} | {row.engine} | {size} | {row.measure} | {_number(row.value)} {row.unit} "
            f"| {_number(row.p95)} | {_number(row.p99)} | {_number(row.ratio)} | {row.goal} | {met} |"
        )
    return "\n".join(lines)


def load(path: str | Path) -> list[Row]:
    with open(path, encoding="utf-8") as source:
        return [Row(**json.loads(line)) for line in source if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="the JSON-lines file the modules wrote (BENCH_RESULTS)")
    args = parser.parse_args()
    print(table(load(args.results)))


if __name__ == "__main__":
    main()
